"""Vendor sandbox: strict emulators of every registered vendor's batch-send API.

A product feature, not test scaffolding: `imgate serve` without configuration and
`imgate sandbox` run it, and every test above the translators uses it as ground truth. It
checks requests as strictly as the vendors (signatures, limits, formats, rate windows)
and answers with the vendors' own bodies. See `_app` for the /sandbox/... control API.

    async with SandboxServer(config=SandboxConfig(seed=1)) as sandbox:
        ...  # send to sandbox.vendor_url("tencent"); inspect sandbox.state

Adding a vendor = one emulator module (an `Emulator` subclass pointing at the vendor's
spec) + its line in `imgate.vendors.registry.VENDORS`, which pairs it with the
vendor's translator.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from imgate.sandbox.app import STATE_KEY, build_app
from imgate.sandbox.server import SandboxServer, default_emulators, serve_sandbox
from imgate.vendors.base.emulation import (
    FAULT_KINDS,
    AccountRules,
    Clock,
    FaultKind,
    FaultRule,
    SandboxConfig,
    VendorSettings,
)
from imgate.vendors.base.emulator import Emulator, EmulatorClass, ParsedCall, VendorError
from imgate.vendors.base.sandbox_state import Delivery, SandboxState, VendorStats
from imgate.vendors.tencent.emulator import TencentEmulator, TencentSettings
from imgate.vendors.tencent.spec import SPEC as _TENCENT
from imgate.vendors.yunxin_v1.emulator import YunxinV1Emulator, YunxinV1Settings
from imgate.vendors.yunxin_v1.spec import SPEC as _YUNXIN
from imgate.vendors.yunxin_v2.emulator import YunxinV2Emulator, YunxinV2Settings

# The fixed sandbox credentials (CONTRACT §2), as their specs declare them: outside
# tools sign requests with these.
SANDBOX_YUNXIN_APP_KEY: str = _YUNXIN.sandbox_credentials["app_key"]
SANDBOX_YUNXIN_APP_SECRET: str = _YUNXIN.sandbox_credentials["app_secret"]
SANDBOX_TENCENT_SDK_APP_ID: int = _TENCENT.sandbox_credentials["sdk_app_id"]
SANDBOX_TENCENT_SECRET_KEY: str = _TENCENT.sandbox_credentials["secret_key"]
SANDBOX_TENCENT_ADMIN_IDENTIFIER: str = _TENCENT.sandbox_credentials["admin_identifier"]


def create_app(
    config: SandboxConfig | None = None, *, emulators: Sequence[EmulatorClass] | None = None
) -> web.Application:
    """The sandbox as an aiohttp application; its state is `app[STATE_KEY]`."""
    chosen = default_emulators() if emulators is None else emulators
    return build_app(config or SandboxConfig(), chosen)


__all__ = [
    "FAULT_KINDS",
    "SANDBOX_TENCENT_ADMIN_IDENTIFIER",
    "SANDBOX_TENCENT_SDK_APP_ID",
    "SANDBOX_TENCENT_SECRET_KEY",
    "SANDBOX_YUNXIN_APP_KEY",
    "SANDBOX_YUNXIN_APP_SECRET",
    "STATE_KEY",
    "AccountRules",
    "Clock",
    "Delivery",
    "Emulator",
    "EmulatorClass",
    "FaultKind",
    "FaultRule",
    "ParsedCall",
    "SandboxConfig",
    "SandboxServer",
    "SandboxState",
    "TencentEmulator",
    "TencentSettings",
    "VendorError",
    "VendorSettings",
    "VendorStats",
    "YunxinV1Emulator",
    "YunxinV1Settings",
    "YunxinV2Emulator",
    "YunxinV2Settings",
    "create_app",
    "default_emulators",
    "serve_sandbox",
]
