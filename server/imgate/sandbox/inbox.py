"""The sandbox's webhook inbox: a receiver of the gateway's webhook events (CONTRACT rule
28), so that a newcomer sees them without writing a server.

Sandbox mode (`imgate serve` without a config) delivers every event to the inbox
`default`; a configured gateway can use any inbox with the sandbox's secret
(SANDBOX_WEBHOOK_SECRET). Each delivery is checked as a receiver should check it, with the
Standard Webhooks library (`standardwebhooks.Webhook.verify`): a wrong signature or a
timestamp over five minutes off is refused with 401 and counted, never kept.

    POST   /sandbox/webhooks/{inbox}   a delivery: 204 when verified and kept (a redelivery
                                       of a kept webhook-id counts in its `deliveries`)
    GET    /sandbox/webhooks/{inbox}   its events, oldest first (the newest 1000 are kept)
    PUT    /sandbox/webhooks/{inbox}   {"fail_next": N}: answer the next N deliveries with
                                       503 (to watch the gateway retry)
    DELETE /sandbox/webhooks/{inbox}   forget it
    GET    /sandbox/webhooks           every inbox: events kept, refused, failing
"""

from __future__ import annotations

import base64
import datetime
import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

SANDBOX_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"imgate-sandbox-webhook-secret-32").decode()
"""The sandbox inbox's secret (as public as the emulators' credentials)."""
SANDBOX_INBOX = "default"
"""The inbox sandbox mode delivers to."""
_PREFIX = "/sandbox/webhooks"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_EVENTS = 1000
"""Events kept per inbox, the oldest forgotten first."""
MAX_INBOXES = 64
_MAX_BODY = 1 << 20


def inbox_path(name: str) -> str:
    """The path of inbox `name`."""
    return f"{_PREFIX}/{name}"


@dataclass(slots=True)
class _Inbox:
    events: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)
    """By webhook-id, in the order first received."""
    refused: int = 0
    fail_next: int = 0


class Inboxes:
    """Every inbox of a sandbox; handlers of /sandbox/webhooks/..."""

    def __init__(self) -> None:
        self._inboxes: dict[str, _Inbox] = {}
        self._webhook = Webhook(SANDBOX_WEBHOOK_SECRET)

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get(_PREFIX, self.list_inboxes)
        path = _PREFIX + "/{inbox}"
        router.add_post(path, self.receive)
        router.add_get(path, self.events)
        router.add_put(path, self.configure)
        router.add_delete(path, self.forget)

    def clear(self) -> None:
        self._inboxes.clear()

    def _inbox(self, request: web.Request, create: bool = False) -> _Inbox:
        name = request.match_info["inbox"]
        if not _NAME.match(name):
            raise _error(web.HTTPBadRequest, "inbox names are 1-64 of A-Z a-z 0-9 _ . -")
        inbox = self._inboxes.get(name)
        if inbox is None:
            if not create:
                return _Inbox()
            if len(self._inboxes) >= MAX_INBOXES:
                raise _error(web.HTTPInsufficientStorage, f"at most {MAX_INBOXES} inboxes")
            inbox = self._inboxes[name] = _Inbox()
        return inbox

    async def receive(self, request: web.Request) -> web.Response:
        inbox = self._inbox(request, create=True)
        body = await request.content.read(_MAX_BODY + 1)
        if len(body) > _MAX_BODY:
            raise _error(web.HTTPRequestEntityTooLarge, f"over {_MAX_BODY} bytes")
        try:
            payload = self._webhook.verify(body, dict(request.headers))
        except WebhookVerificationError as exc:
            inbox.refused += 1
            raise _error(web.HTTPUnauthorized, f"not verified: {exc}") from None
        except ValueError:
            inbox.refused += 1
            raise _error(web.HTTPBadRequest, "the body is not JSON") from None
        if inbox.fail_next:
            inbox.fail_next -= 1
            raise _error(web.HTTPServiceUnavailable, "failing on purpose (fail_next)")
        webhook_id = request.headers["webhook-id"]
        kept = inbox.events.get(webhook_id)
        if kept is not None:
            kept["deliveries"] += 1
        else:
            inbox.events[webhook_id] = {
                "webhook_id": webhook_id,
                "received_at": datetime.datetime.now(datetime.UTC).isoformat(
                    timespec="milliseconds"
                ),
                "deliveries": 1,
                "event": payload,
            }
            while len(inbox.events) > MAX_EVENTS:
                inbox.events.popitem(last=False)
        return web.Response(status=204)

    async def events(self, request: web.Request) -> web.Response:
        inbox = self._inbox(request)
        return web.json_response({"events": list(inbox.events.values())})

    async def configure(self, request: web.Request) -> web.Response:
        inbox = self._inbox(request, create=True)
        try:
            doc = await request.json()
        except ValueError:
            raise _error(web.HTTPBadRequest, "body must be JSON") from None
        fail_next = doc.get("fail_next") if isinstance(doc, dict) else None
        if not isinstance(fail_next, int) or isinstance(fail_next, bool) or fail_next < 0:
            raise _error(web.HTTPBadRequest, 'body must be {"fail_next": N}, N >= 0')
        inbox.fail_next = fail_next
        return web.json_response(self._summary(inbox))

    async def forget(self, request: web.Request) -> web.Response:
        self._inbox(request)  # checks the name
        self._inboxes.pop(request.match_info["inbox"], None)
        return web.Response(status=204)

    async def list_inboxes(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"inboxes": {name: self._summary(inbox) for name, inbox in self._inboxes.items()}}
        )

    @staticmethod
    def _summary(inbox: _Inbox) -> dict[str, int]:
        return {"events": len(inbox.events), "refused": inbox.refused, "fail_next": inbox.fail_next}


def _error(kind: type[web.HTTPError], message: str) -> web.HTTPError:
    return kind(text=json.dumps({"error": message}), content_type="application/json")
