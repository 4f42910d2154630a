"""HTTP/JSON on `[http] listen` (CONTRACT §10 rule 29), in the gateway's own process.

Every route comes from an RPC's google.api.http option (api.http.routes) and calls the
same transport-neutral operation as gRPC (api.service.GatewayApi, the method named after
the RPC in snake_case): this is a second face of one implementation, not a proxy to the
gRPC port. An annotated RPC that GatewayApi does not implement answers UNIMPLEMENTED.

- Requests: path variables, query parameters and a JSON body (protobuf's JSON mapping,
  api.http.transcode). A client stream (UploadRecipients) reads its body line by line
  and hands the operation pages of values as they arrive (api.http.lines): memory stays
  flat whatever the body's size.
- Responses: canonical protobuf JSON. Server streams answer newline-delimited JSON (one
  response message per line), or Server-Sent Events when the request accepts
  `text/event-stream`: each message an event whose `id` is its cursor; a request with
  `Last-Event-ID` and no cursor resumes after it; `event: end` closes the stream (an
  EventSource would reconnect otherwise).
- Errors: the gRPC code's HTTP status (transcode.HTTP_STATUS) and a google.rpc.Status
  body with its details. Once a stream has started, an error is its last line
  (`{"error": Status}`) or event (`event: error`).
- The same callers (`Authorization: Bearer`), TLS, limits (request size, deadline as
  `grpc-timeout`) and RPC metrics (`transport="http"`) as gRPC. Each call runs in a task
  of its own, like a gRPC call, so the caller and log context it sets end with it, and a
  client that disconnects cancels it (a bound BatchSend is cancelled then, rule 10).

Also served: GET /v1/openapi.json (generated from the proto by scripts/gen_openapi.py),
the console at / (`[http] console`), and in sandbox mode the emulators' /sandbox/ control
API, forwarded so that the console stays on one origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.resources
import inspect
import logging
import re
import ssl
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any

import aiohttp
import grpc
from aiohttp import web
from google.protobuf import message as protobuf_message
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor

from imgate.api.callers import RefusalLog, current_caller, identify
from imgate.api.decode import MAX_REQUEST_BYTES, SERVICE
from imgate.api.errors import ApiError, as_api_error, invalid
from imgate.api.http.answers import (
    API_HEADERS,
    SSE,
    Answer,
    error_response,
    frame,
    json_response,
    resume_after,
)
from imgate.api.http.lines import pages_of_lines
from imgate.api.http.routes import Route, service_routes
from imgate.api.http.transcode import build_request, parse_body
from imgate.api.rpc_metrics import RpcCall, rpc_kind
from imgate.config.addresses import split_listen
from imgate.config.errors import ConfigError
from imgate.config.model import CallerConfig, GatewayConfig, TLSConfig
from imgate.observability.metrics import GrpcMetrics
from imgate.vendors.base.translator import FieldViolation

log = logging.getLogger("imgate.http")

OPENAPI_PATH = "/v1/openapi.json"
_SANDBOX_BODY_BYTES = 1 << 20
# On stop, calls still answering get this long (their streams have ended by then: the
# gateway stops the batches first, as for gRPC).
_SHUTDOWN_S = 2.0
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}
_GRPC_TIMEOUT = re.compile(r"^([0-9]{1,8})([HMSmun])$")
_CONSOLE_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
# The console loads nothing from anywhere but this origin, and the browser enforces it.
_CONSOLE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        " connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class HttpServer:
    """The HTTP/JSON face of `api` (GatewayApi; any object with the RPCs' snake_case
    methods) for the RPCs of `service`."""

    def __init__(
        self,
        config: GatewayConfig,
        api: object,
        metrics: GrpcMetrics,
        service: ServiceDescriptor = SERVICE,
        refusals: RefusalLog | None = None,
    ) -> None:
        self._config = config
        self._refusals = refusals or RefusalLog()
        self._api = api
        self._metrics = metrics
        self._routes = service_routes(service)
        self._operations = {route.rpc.name: _operation(api, route) for route in self._routes}
        self._openapi = _package_file("imgate.api.http", "openapi.json")
        self._console = _console_files() if config.http_console else {}
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0
        """Where HTTP is served once started."""

    @property
    def routes(self) -> tuple[Route, ...]:
        return self._routes

    def app(self) -> web.Application:
        """The aiohttp application (tests may serve it themselves)."""
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_route("*", "/v1/{tail:.*}", self._dispatch)
        if self._config.sandbox_url:
            app.router.add_route("*", "/sandbox/{tail:.*}", self._sandbox)
            app.router.add_route("*", "/sandbox", self._sandbox)
        if self._console:
            app.router.add_get("/", self._console_file)
            app.router.add_get("/console/{name}", self._console_file)
        app.on_cleanup.append(self._close_session)
        return app

    async def start(self) -> int:
        """Bind `[http] listen` and serve; returns the port. Raises ConfigError naming
        `http.listen` (or the TLS file) when that fails."""
        host, port = split_listen(self._config.http_listen)
        context = _tls_context(self._config.tls) if self._config.tls is not None else None
        # handler_cancellation: a client that goes away cancels its call, as in gRPC.
        runner = web.AppRunner(
            self.app(),
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=_SHUTDOWN_S,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port, ssl_context=context).start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(
                "http.listen",
                f"cannot listen on {self._config.http_listen}: {exc.strerror or exc}",
            ) from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        scheme = "https" if context is not None else "http"
        shown = host if ":" not in host else f"[{host}]"
        log.info(
            "HTTP/JSON API%s at %s://%s:%d/",
            " and console" * bool(self._console),
            scheme,
            shown,
            self.port,
        )
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    # -- the API ------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.rel_url.raw_path
        if path == OPENAPI_PATH and request.method == "GET":
            return web.Response(
                body=self._openapi, content_type="application/json", headers=API_HEADERS
            )
        allowed = []
        for route in self._routes:
            try:
                variables = route.match(path)
            except UnicodeDecodeError:
                return error_response(invalid([FieldViolation("path", "not UTF-8")]))
            if variables is None:
                continue
            if route.method != request.method:
                allowed.append(route.method)
                continue
            # A task of its own, like a gRPC call: what the call sets in context (its
            # caller, the log fields) ends with it, never reaching the connection's next
            # request; cancelling the handler (the client left) cancels the call.
            return await asyncio.create_task(self._rpc(request, route, variables))
        if allowed:
            error = ApiError(grpc.StatusCode.UNIMPLEMENTED, f"use {' or '.join(allowed)} here")
            response = error_response(error)
            response.set_status(405)
            response.headers["Allow"] = ", ".join(allowed)
            return response
        return error_response(
            ApiError(
                grpc.StatusCode.NOT_FOUND,
                f"no route {request.method} {path[:64]}; see {OPENAPI_PATH}",
            )
        )

    async def _rpc(
        self, request: web.Request, route: Route, variables: Mapping[str, str]
    ) -> web.StreamResponse:
        rpc = route.rpc
        kind = rpc_kind(rpc.client_streaming, rpc.server_streaming)
        labels = (kind, rpc.containing_service.full_name, rpc.name, "http")
        call = RpcCall(self._metrics, labels, rpc.client_streaming)
        answer = Answer(request)
        code = grpc.StatusCode.OK
        try:
            caller = self._authenticate(request, rpc.name)
            if caller is not None:
                current_caller.set(caller)  # in this call's own task: it ends with it
            timeout = _grpc_timeout(request.headers.get("grpc-timeout"))
            deadline = asyncio.timeout(timeout)
            try:
                async with deadline:
                    return await self._call(request, route, variables, call, answer, timeout)
            except TimeoutError:
                if not deadline.expired():
                    raise
                raise ApiError(
                    grpc.StatusCode.DEADLINE_EXCEEDED, "the call's grpc-timeout passed"
                ) from None
        except ApiError as error:
            code = error.code
            return await answer.fail(error)
        except (asyncio.CancelledError, ConnectionResetError):
            code = grpc.StatusCode.CANCELLED  # the client went away
            raise
        except Exception as exc:
            known = as_api_error(exc)  # the store's trouble: UNAVAILABLE, as over gRPC
            if known is not None:
                code = known.code
                return await answer.fail(known)
            log.exception("HTTP %s failed", rpc.name)
            code = grpc.StatusCode.INTERNAL
            return await answer.fail(ApiError(code, "internal error"))
        finally:
            call.end(code)

    def _authenticate(self, request: web.Request, what: str) -> CallerConfig | None:
        """The caller presenting the request's bearer token; None without [callers] (the
        anonymous caller: rule 18 keeps such a gateway on loopback)."""
        callers = self._config.callers
        if not callers:
            return None
        caller = identify(callers, request.headers.get("Authorization"))
        if caller is None:
            # Who knocked and where, for the security log; never what they presented.
            self._refusals.refused(f"HTTP {what}", str(request.remote))
            raise ApiError(
                grpc.StatusCode.UNAUTHENTICATED,
                "this gateway needs header 'Authorization: Bearer <token>' of a configured"
                " caller; the token is missing or not known",
            )
        return caller

    async def _call(
        self,
        request: web.Request,
        route: Route,
        variables: Mapping[str, str],
        call: RpcCall,
        answer: Answer,
        time_remaining: float | None,
    ) -> web.StreamResponse:
        rpc = route.rpc
        operation = self._operations[rpc.name]
        if operation is None:
            raise ApiError(
                grpc.StatusCode.UNIMPLEMENTED, f"{rpc.name} is not implemented by this gateway"
            )
        if rpc.client_streaming:
            result = await operation(self._pages(request, route, variables, call))
            call.sent.inc()
            return json_response(result)
        body = None
        if route.body:
            try:
                raw = await request.read()
            except web.HTTPRequestEntityTooLarge:
                raise ApiError(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the body is over {MAX_REQUEST_BYTES} bytes",
                ) from None
            body = parse_body(raw)
        message = build_request(route, variables, request.query.items(), body)
        sse = SSE in request.headers.get("Accept", "")
        resume = request.headers.get("Last-Event-ID")
        if rpc.server_streaming and sse and resume:
            resume_after(message, resume)  # an EventSource reconnecting
        extra = {"time_remaining": time_remaining} if _takes_time_remaining(operation) else {}
        if not rpc.server_streaming:
            result = await operation(message, **extra)
            call.sent.inc()
            return json_response(result)
        output = message_factory.GetMessageClass(rpc.output_type)
        stream: AsyncGenerator[bytes, None] = operation(message, **extra)
        async with contextlib.aclosing(stream):
            # The first message before the headers: an error that comes at once (NOT_FOUND,
            # INVALID_ARGUMENT) still gets its HTTP status.
            item = await anext(stream, None)
            response = await answer.start_stream(sse)
            while item is not None:
                await response.write(frame(output.FromString(item), sse))
                call.sent.inc()
                item = await anext(stream, None)
        if sse:
            await response.write(b"event: end\ndata: {}\n\n")
        await response.write_eof()
        return response

    async def _pages(
        self, request: web.Request, route: Route, variables: Mapping[str, str], call: RpcCall
    ) -> AsyncIterator[protobuf_message.Message]:
        """The client stream: the query's fields in the first message, the body's lines
        as the route's repeated field, PAGE_LINES a message."""
        head = build_request(route, variables, request.query.items())
        page_type = type(head)
        first: protobuf_message.Message | None = head
        async for values in pages_of_lines(request.content):
            message = first if first is not None else page_type()
            first = None
            getattr(message, route.body).extend(values)
            call.received.inc()
            yield message
        if first is not None:  # an empty body still says so: the operation refuses it
            call.received.inc()
            yield first

    # -- around the API -----------------------------------------------------------------

    async def _console_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info.get("name", "index.html")
        found = self._console.get(name)
        if found is None:
            raise web.HTTPNotFound()
        body, content_type = found
        return web.Response(
            body=body, content_type=content_type, charset="utf-8", headers=_CONSOLE_HEADERS
        )

    async def _sandbox(self, request: web.Request) -> web.StreamResponse:
        """The emulators' /sandbox/ control API, forwarded as is (sandbox mode only)."""
        try:
            self._authenticate(request, "sandbox control")
        except ApiError as error:
            return error_response(error)
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=30), auto_decompress=False
            )
        body = await request.content.read(_SANDBOX_BODY_BYTES + 1)
        if len(body) > _SANDBOX_BODY_BYTES:
            return web.json_response({"error": "body too large"}, status=413)
        url = self._config.sandbox_url + str(request.rel_url)
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        try:
            async with self._session.request(
                request.method, url, data=body or None, headers=headers, allow_redirects=False
            ) as answer:
                payload = await answer.read()
                return web.Response(
                    status=answer.status,
                    body=payload,
                    headers={
                        "Content-Type": answer.headers.get("Content-Type", "application/json"),
                        **API_HEADERS,
                    },
                )
        except (aiohttp.ClientError, TimeoutError):
            return web.json_response({"error": "the sandbox does not answer"}, status=502)

    async def _close_session(self, _: web.Application) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _operation(api: object, route: Route) -> Callable[..., Any] | None:
    """The API's method for the route's RPC: BatchSend -> batch_send."""
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", route.rpc.name).lower()
    found = getattr(api, name, None)
    return found if callable(found) else None


def _takes_time_remaining(operation: Callable[..., Any]) -> bool:
    """Operations that bound their work by the caller's deadline take `time_remaining`."""
    return "time_remaining" in inspect.signature(operation).parameters


def _grpc_timeout(value: str | None) -> float | None:
    """The `grpc-timeout` header (gRPC's format: "30S", "500m"), as grpc-gateway reads it."""
    if value is None:
        return None
    found = _GRPC_TIMEOUT.match(value.strip())
    if found is None:
        raise invalid([FieldViolation("grpc-timeout", "expected digits and one of H M S m u n")])
    return int(found.group(1)) * _TIMEOUT_UNITS[found.group(2)]


def _tls_context(tls: TLSConfig) -> ssl.SSLContext:
    """The [tls] table as a server context: the same certificate, key and (mTLS) client
    CA as the gRPC port. Errors name the key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("tls.cert_file", f"cannot use it with tls.key_file: {exc}") from None
    if tls.client_ca_file:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError("tls.client_ca_file", f"cannot read it: {exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _package_file(package: str, name: str) -> bytes:
    return importlib.resources.files(package).joinpath(name).read_bytes()


def _console_files() -> dict[str, tuple[bytes, str]]:
    """The console's files (server/imgate/console), read once: {name: (body, type)}."""
    files: dict[str, tuple[bytes, str]] = {}
    for entry in importlib.resources.files("imgate.console").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in _CONSOLE_TYPES:
            files[entry.name] = (entry.read_bytes(), _CONSOLE_TYPES[suffix])
    return files
