"""The one error the configuration raises, naming the offending key by its full path
(e.g. `backends.tx.secret_key`) so that start-up and `imgate config check` can say which
line to fix."""

from __future__ import annotations


class ConfigError(Exception):
    """The configuration cannot be used; `key` is the full path of the offending key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem
