"""The vendor plugins, in one explicit list.

Adding a vendor means one translator module, one sandbox emulator module and one line in
VENDORS; nothing else changes (config keys, validation, sandbox mode and ListBackends all
read this list).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from imgate.sandbox._app import EmulatorClass
from imgate.sandbox.tencent import TencentEmulator
from imgate.sandbox.yunxin_v1 import YunxinV1Emulator
from imgate.sandbox.yunxin_v2 import YunxinV2Emulator
from imgate.translators._base import Translator
from imgate.translators.tencent import TencentTranslator
from imgate.translators.yunxin_v1 import YunxinV1Translator
from imgate.translators.yunxin_v2 import YunxinV2Translator


@dataclass(frozen=True, slots=True)
class VendorPlugin:
    """A vendor: how the gateway talks to it, and how the sandbox pretends to be it."""

    translator: type[Translator]
    emulator: EmulatorClass

    @property
    def vendor(self) -> str:
        return self.translator.vendor


VENDORS: Final[tuple[VendorPlugin, ...]] = (
    VendorPlugin(YunxinV1Translator, YunxinV1Emulator),
    VendorPlugin(YunxinV2Translator, YunxinV2Emulator),
    VendorPlugin(TencentTranslator, TencentEmulator),
)

BY_VENDOR: Final[dict[str, VendorPlugin]] = {plugin.vendor: plugin for plugin in VENDORS}
