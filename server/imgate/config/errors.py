from __future__ import annotations


class ConfigError(Exception):
    """The configuration cannot be used; `key` is the full path of the offending key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key
        self.problem = problem
