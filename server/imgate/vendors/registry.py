"""The vendor plugins, in one explicit list.

Adding a vendor means one folder (`spec.py`, `translator.py`, `emulator.py`) and one line
in VENDORS; nothing else changes: config keys, validation, sandbox mode, ListBackends,
the docs tables (scripts/gen_vendor_docs.py) and the shared test suites read this list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from imgate.vendors.base.emulator import EmulatorClass
from imgate.vendors.base.spec import VendorSpec
from imgate.vendors.base.translator import Translator
from imgate.vendors.rongcloud.emulator import RongCloudEmulator
from imgate.vendors.rongcloud.spec import SPEC as RONGCLOUD
from imgate.vendors.rongcloud.translator import RongCloudTranslator
from imgate.vendors.tencent.emulator import TencentEmulator
from imgate.vendors.tencent.spec import SPEC as TENCENT
from imgate.vendors.tencent.translator import TencentTranslator
from imgate.vendors.yunxin_v1.emulator import YunxinV1Emulator
from imgate.vendors.yunxin_v1.spec import SPEC as YUNXIN_V1
from imgate.vendors.yunxin_v1.translator import YunxinV1Translator
from imgate.vendors.yunxin_v2.emulator import YunxinV2Emulator
from imgate.vendors.yunxin_v2.spec import SPEC as YUNXIN_V2
from imgate.vendors.yunxin_v2.translator import YunxinV2Translator


@dataclass(frozen=True, slots=True)
class VendorPlugin:
    """A vendor: its facts, how the gateway talks to it, how the sandbox pretends to be it."""

    spec: VendorSpec
    translator: type[Translator]
    emulator: EmulatorClass

    def __post_init__(self) -> None:
        # One declaration: the translator and the emulator read the same spec object.
        for part in (self.translator, self.emulator):
            if part.spec is not self.spec:
                raise ValueError(f"{part.__name__} does not point at {self.spec.vendor}'s spec")

    @property
    def vendor(self) -> str:
        return self.spec.vendor


VENDORS: Final[tuple[VendorPlugin, ...]] = (
    VendorPlugin(YUNXIN_V1, YunxinV1Translator, YunxinV1Emulator),
    VendorPlugin(YUNXIN_V2, YunxinV2Translator, YunxinV2Emulator),
    VendorPlugin(TENCENT, TencentTranslator, TencentEmulator),
    VendorPlugin(RONGCLOUD, RongCloudTranslator, RongCloudEmulator),
)

BY_VENDOR: Final[dict[str, VendorPlugin]] = {plugin.vendor: plugin for plugin in VENDORS}
