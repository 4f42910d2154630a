"""The vendor plugins, in one explicit list.

Adding a vendor means one translator module, one sandbox emulator module and one line in
VENDORS; nothing else changes (config keys, validation, sandbox mode and ListBackends all
read this list).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from imgate.vendors.base.emulator import EmulatorClass
from imgate.vendors.base.translator import Translator
from imgate.vendors.tencent.emulator import TencentEmulator
from imgate.vendors.tencent.translator import TencentTranslator
from imgate.vendors.yunxin_v1.emulator import YunxinV1Emulator
from imgate.vendors.yunxin_v1.translator import YunxinV1Translator
from imgate.vendors.yunxin_v2.emulator import YunxinV2Emulator
from imgate.vendors.yunxin_v2.translator import YunxinV2Translator


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
