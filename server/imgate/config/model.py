"""The configuration's shape: frozen dataclasses with a docstring per field, and the
defaults they start from. What the gateway reads at run time; parsing lives in the
sibling modules."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field

from imgate.config.redaction import Secrets

DEFAULT_LISTEN = "127.0.0.1:50051"
# Sandbox mode's emulators (and /sandbox/...) listen here: a fixed, documented address.
DEFAULT_SANDBOX_LISTEN_IN_SERVE = "127.0.0.1:50052"
# Sandbox mode's HTTP/JSON API and console ([http] listen of a configured gateway).
DEFAULT_HTTP_LISTEN_IN_SANDBOX = "127.0.0.1:50053"
DEFAULT_MAX_RESPONSE_BYTES = 4 << 20
DEFAULT_BATCH_RETENTION_S = 604_800.0


@dataclass(frozen=True, slots=True)
class BackendConfig:
    """One named vendor backend."""

    name: str
    """The name callers put in BatchSendRequest.backend."""
    vendor: str
    """Vendor id: one of imgate.vendors.registry.VENDORS."""
    base_url: str
    """Scheme + host (+ port); the vendor's documented path is appended."""
    credentials: Secrets = field(repr=False)
    """Vendor credentials (keys declared by the vendor's spec)."""
    recipients_per_call: int
    """Most recipients in one vendor call."""
    call_limit: int
    """At most this many calls ..."""
    call_window_s: float
    """... in any window of this many seconds."""
    recipient_limit: int
    """At most this many recipients (0 = not counted) ..."""
    recipient_window_s: float
    """... in any window of this many seconds."""
    block_s: float
    """How long the backend pauses after a vendor rate-limit refusal."""
    max_in_flight: int = 0
    """Concurrent vendor calls; 0 = derived from the call quota and the measured round
    trip (Little's law, see imgate.pipeline.permits)."""
    max_running_batches: int = 64
    """Batches this gateway sends at once on the backend; the others wait QUEUED in the
    store (memory does not grow with the backlog)."""
    max_queued_batches: int = 100_000
    """Past this many QUEUED batches on the backend, SubmitBatch is RESOURCE_EXHAUSTED."""
    request_timeout_s: float = 10.0
    """Timeout of one vendor call."""
    max_attempts: int = 5
    """Most calls per chunk for failures that were certainly not processed."""
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    """Largest vendor answer read; a larger one is never buffered beyond this and makes
    the call's recipients UNCERTAIN (CONTRACT §8 rule 24)."""
    backup_base_url: str = ""
    """Where calls go after one failed certainly unprocessed (connection refused, HTTP
    502) on the current base URL; empty = no failover. Set from `region` or given."""
    sandbox: bool = False
    """Whether this backend points at the built-in emulators."""
    recallable: bool = False
    """Whether RecallBatch may recall this backend's batches (through the vendor's recall
    API). On a vendor whose send API returns message ids only when asked (Yunxin legacy),
    it also asks for them on every batch (returnMsgid: 100 recipients per call)."""
    recall_call_limit: int = 1
    """At most this many recall calls (one message to one recipient each) ..."""
    recall_call_window_s: float = 1.0
    """... in any window of this many seconds: the recall API's own quota."""
    recall_block_s: float = 1.0
    """How long recalls pause after the vendor refused one for rate."""


@dataclass(frozen=True, slots=True)
class CallerConfig:
    """One `[callers.NAME]` table: who may call the gateway (CONTRACT §6)."""

    name: str
    """The caller's name: its batches, request ids and log lines are keyed by it."""
    token_sha256: bytes = field(repr=False)
    """SHA-256 digest of its bearer token (never the token itself)."""
    backends: tuple[str, ...] | None = None
    """The backends it may use; None = all."""
    weight: int = 1
    """Its share of a backend's quota when callers compete for it (rule 19)."""

    def may_use(self, backend: str) -> bool:
        return self.backends is None or backend in self.backends


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """The `[tls]` table: serve TLS, and with `client_ca_file` require client certificates."""

    cert_file: str
    """PEM certificate chain of the server."""
    key_file: str
    """PEM private key of the server."""
    client_ca_file: str = ""
    """PEM CA(s) that sign client certificates; set = mTLS (a client without one is refused)."""


WEBHOOK_EVENT_TYPES = ("batch.ended", "recall.ended")
"""What a `[[webhooks]]` endpoint may ask to be told (CONTRACT §9 rule 28)."""
WEBHOOK_SECRET_PREFIX = "whsec_"  # noqa: S105 - the prefix, not a secret


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    """One `[[webhooks]]` table: an endpoint told by HTTP POST when batches end (rule 28)."""

    url: str
    """Where events are POSTed (http:// or https://); redirects are never followed."""
    secret: str = field(repr=False)
    """"whsec_" + base64 of 24-64 random bytes: the key every delivery is signed with
    (Standard Webhooks); never logged."""
    events: tuple[str, ...]
    """The event types it is told: "batch.ended", "recall.ended"."""
    callers: tuple[str, ...] | None = None
    """Only these callers' batches; None = every caller's."""
    retry_for_s: float = 86_400.0
    """How long an event is retried (from the batch's end) before it is given up."""
    timeout_s: float = 10.0
    """Timeout of one delivery attempt."""

    @property
    def shown_url(self) -> str:
        """The url for logs: scheme, host and path, without credentials or query."""
        parts = urllib.parse.urlsplit(self.url)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """The whole gateway."""

    backends: tuple[BackendConfig, ...]
    """Configured backends, in file order."""
    default_backend: str
    """Backend used when a request names none."""
    listen: str = DEFAULT_LISTEN
    """host:port the gRPC server binds."""
    max_recipients_per_request: int = 100_000
    """Most recipients one BatchSendRequest may carry."""
    max_recipients_per_list: int = 10_000_000
    """Most unique recipients one UploadRecipients list may hold."""
    max_schedule_ahead_s: float = 2_592_000.0
    """How far ahead SubmitBatchRequest.send_after may be (30 days)."""
    state_dir: str = ""
    """Where the gateway keeps its state (the SQLite store); see default_state_dir()."""
    store_url: str = ""
    """[store] url: "memory", "sqlite:///PATH", "postgresql://..." or empty for imgate.db
    in state_dir."""
    batch_retention_s: float = DEFAULT_BATCH_RETENTION_S
    """[store] batch_retention_s: how long an ended batch (and its request_id) is kept."""
    lease_s: float = 30.0
    """[store] lease_s: after this long a dead replica's batches are resumed by others."""
    quota_url: str = ""
    """[quota] url: Redis shared by replicas for vendor quotas (redis://, rediss://,
    unix://); empty = quotas counted in this process only."""
    quota_key_prefix: str = "imgate"
    """[quota] key_prefix: prefix of every Redis key the gateway uses."""
    shutdown_grace_s: float = 15.0
    """On SIGTERM, how long calls in flight may take to finish."""
    metrics_listen: str = ""
    """[metrics] listen: host:port serving Prometheus text at GET /metrics; empty = off."""
    http_listen: str = ""
    """[http] listen: host:port serving the API as HTTP/JSON (and the console); empty = off."""
    http_console: bool = True
    """[http] console: serve the web console at / on the HTTP port."""
    health_listen: str = ""
    """[health] listen: host:port serving grpc.health.v1 alone, in plaintext and without a
    token, for probes that cannot speak TLS (Kubernetes grpc probes); empty = off."""
    tracing_otlp_endpoint: str = ""
    """[tracing] otlp_endpoint: OTLP/gRPC collector for OpenTelemetry traces; empty = off
    (on needs the `otel` extra: pip install 'imgate[otel]')."""
    log_format: str = "text"
    """[log] format: "text" (one line per record) or "json" (one object per line)."""
    log_level: str = "info"
    """[log] level: debug, info, warning or error."""
    sandbox: bool = False
    """Sandbox mode: the backends are the built-in emulators."""
    allow_unauthenticated: bool = False
    """Without [callers], serve on a non-loopback address anyway (rule 18)."""
    callers: tuple[CallerConfig, ...] = ()
    """[callers.NAME] tables; empty = one anonymous caller ("") and no authentication."""
    tls: TLSConfig | None = None
    """[tls] table; None = plaintext gRPC."""
    webhooks: tuple[WebhookConfig, ...] = ()
    """[[webhooks]] tables: endpoints told when batches end (rule 28)."""
    sandbox_url: str = ""
    """Sandbox mode: the emulators' base URL, whose /sandbox/ control API the HTTP port
    serves too (same origin for the console); empty otherwise. Not a file key."""

    def backend(self, name: str) -> BackendConfig | None:
        """The backend called `name` (empty = the default), or None."""
        wanted = name or self.default_backend
        return next((b for b in self.backends if b.name == wanted), None)
