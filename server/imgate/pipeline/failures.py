"""How the pipeline's background work logs a failure.

A store that cannot be used (a full disk, a database connection that was lost) is the
operator's trouble, not a bug: one line naming it, no traceback (issue 22). Anything
else is a bug: its traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from imgate.store.records import StoreError


def log_failure(
    logger: logging.Logger,
    what: str,
    exc: BaseException,
    is_outage: Callable[[BaseException], bool] | None = None,
) -> None:
    """Log that `what` failed because of `exc` (`is_outage`: the store's own test)."""
    if isinstance(exc, StoreError | ConnectionError | TimeoutError) or (
        is_outage is not None and is_outage(exc)
    ):
        logger.error("%s: %s", what, str(exc) or type(exc).__name__)
    else:
        logger.error("%s", what, exc_info=exc)
