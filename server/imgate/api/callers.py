"""Who is calling: bearer tokens checked by a server interceptor (CONTRACT.md §6 rule 17).

Each `[callers.NAME]` holds the SHA-256 of its token, never the token. The interceptor
hashes the token a request presents and compares it with every configured digest using
`hmac.compare_digest`, so neither the token nor how much of it matched shows in timing.
The caller it finds goes into `current_caller` for the servicer, which keys batches,
request ids and recipient lists by it (the HTTP/JSON layer checks the `Authorization`
header with the same `identify`). `grpc.health.v1.Health` stays open: load
balancers and `imgate health` probe it without a token.

Error texts never contain the presented token, only what to do about it.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextvars import ContextVar
from typing import Any, TypeAlias

import grpc
from grpc_health.v1 import health

from imgate.config.model import CallerConfig

ANONYMOUS = CallerConfig(name="", token_sha256=b"")
"""The caller of a gateway without [callers]: may use every backend."""

current_caller: ContextVar[CallerConfig] = ContextVar("imgate_caller", default=ANONYMOUS)
"""The caller of the RPC being served (set by CallerInterceptor for each call)."""

log = logging.getLogger("imgate.callers")


class RefusalLog:
    """Refused calls, logged a line a while (issue 22: a line per refusal put the log's
    volume in an attacker's hands). The first refusal of a quiet spell is logged at once;
    the ones after it within `every_s` are counted, and the count is logged (with the
    last peer seen) by the next refusal after `every_s`, or by `flush`."""

    def __init__(self, every_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._last_line = float("-inf")
        self._held = 0
        self._last = ""

    def refused(self, what: str, peer: str) -> None:
        now = self._clock()
        self._last = f"{what} from {peer}"
        if now - self._last_line < self.every_s:
            self._held += 1
            return
        self.flush()
        self._last_line = now
        log.warning("refused %s: no known bearer token", self._last)

    def flush(self) -> None:
        """Log the refusals counted since the last line, if any."""
        if self._held:
            log.warning(
                "refused %d more calls without a known bearer token in the last %.0fs"
                " (the last: %s)",
                self._held,
                self.every_s,
                self._last,
            )
            self._held = 0


_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
_OPEN_PREFIX = f"/{health.SERVICE_NAME}/"
_BEARER = "bearer "


def token_sha256(token: str) -> str:
    """The hex `token_sha256` a `[callers.NAME]` table holds for `token`."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh bearer token: 256 random bits, URL-safe text."""
    return secrets.token_urlsafe(32)


def identify(callers: Sequence[CallerConfig], authorization: object) -> CallerConfig | None:
    """The caller whose token `authorization` ("Bearer <token>", from gRPC metadata or an
    HTTP header) presents, or None."""
    if not isinstance(authorization, str) or authorization[: len(_BEARER)].lower() != _BEARER:
        return None
    digest = hashlib.sha256(authorization[len(_BEARER) :].strip().encode()).digest()
    found = None
    # Every digest is compared, so the time taken does not say which one matched.
    for caller in callers:
        if hmac.compare_digest(digest, caller.token_sha256):
            found = caller
    return found


class CallerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Finds the caller of every RPC from `authorization: Bearer <token>` metadata."""

    def __init__(self, callers: Sequence[CallerConfig], refusals: RefusalLog) -> None:
        """`refusals`: where refused calls are counted (the gateway's, HTTP's too)."""
        self._callers = tuple(callers)
        self.refusals = refusals

    def identify(self, metadata: Sequence[tuple[str, Any]] | None) -> CallerConfig | None:
        """The caller whose token the metadata presents, or None."""
        value = next((v for k, v in metadata or () if k == "authorization"), None)
        return identify(self._callers, value)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_OPEN_PREFIX):
            return handler
        caller = self.identify(handler_call_details.invocation_metadata)
        if caller is None:
            text = (
                "this gateway needs metadata 'authorization: Bearer <token>' of a configured"
                " caller; the token is missing or not known"
            )
            method = handler_call_details.method
            refusals = self.refusals
            return _replace_behaviour(handler, lambda _: _denied(text, method, refusals))
        return _replace_behaviour(handler, lambda behaviour: _as_caller(caller, behaviour))


def _replace_behaviour(
    handler: grpc.RpcMethodHandler[Any, Any],
    wrap: Callable[[Callable[..., Any]], Callable[..., Any]],
) -> grpc.RpcMethodHandler[Any, Any]:
    """`handler` with its one behaviour (whatever the streaming shape) wrapped."""
    for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behaviour = getattr(handler, kind)
        if behaviour is not None:
            # grpc's method handlers are named tuples.
            replaced: grpc.RpcMethodHandler[Any, Any] = handler._replace(  # type: ignore[attr-defined]
                **{kind: wrap(behaviour)}
            )
            return replaced
    return handler


def _denied(text: str, method: str, refusals: RefusalLog) -> Callable[..., Any]:
    async def deny(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        # Who knocked and where, for the security log; never what they presented.
        refusals.refused(method, context.peer())
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, text)

    return deny


def _as_caller(caller: CallerConfig, behaviour: Callable[..., Any]) -> Callable[..., Any]:
    # Each RPC runs in its own task, so the value set here is seen by that RPC alone.
    if inspect.isasyncgenfunction(behaviour):

        async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
            current_caller.set(caller)
            async for response in behaviour(request, context):
                yield response

        return stream

    async def call(request: Any, context: Any) -> Any:
        current_caller.set(caller)
        result = behaviour(request, context)
        return await result if inspect.isawaitable(result) else result

    return call
