"""The vendor plugins, in one explicit list.

Adding a vendor means one folder (`spec.py`, `translator.py`, `emulator.py`, and with a
recall API `recall.py` and `recall_emulator.py`) and one entry in VENDORS; nothing else
changes: config keys, validation, sandbox mode, ListBackends, the docs tables
(scripts/gen_vendor_docs.py) and the shared test suites read this list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from imgate.vendors.base.emulator import EmulatorClass
from imgate.vendors.base.recall import RecallTranslator
from imgate.vendors.base.spec import VendorSpec
from imgate.vendors.base.translator import Translator
from imgate.vendors.rongcloud.emulator import RongCloudEmulator
from imgate.vendors.rongcloud.spec import SPEC as RONGCLOUD
from imgate.vendors.rongcloud.translator import RongCloudTranslator
from imgate.vendors.tencent.emulator import TencentEmulator
from imgate.vendors.tencent.recall import TencentRecallTranslator
from imgate.vendors.tencent.recall_emulator import TencentRecallEmulator
from imgate.vendors.tencent.spec import SPEC as TENCENT
from imgate.vendors.tencent.translator import TencentTranslator
from imgate.vendors.yunxin_v1.emulator import YunxinV1Emulator
from imgate.vendors.yunxin_v1.recall import YunxinV1RecallTranslator
from imgate.vendors.yunxin_v1.recall_emulator import YunxinV1RecallEmulator
from imgate.vendors.yunxin_v1.spec import SPEC as YUNXIN_V1
from imgate.vendors.yunxin_v1.translator import YunxinV1Translator
from imgate.vendors.yunxin_v2.emulator import YunxinV2Emulator
from imgate.vendors.yunxin_v2.recall import YunxinV2RecallTranslator
from imgate.vendors.yunxin_v2.recall_emulator import YunxinV2RecallEmulator
from imgate.vendors.yunxin_v2.spec import SPEC as YUNXIN_V2
from imgate.vendors.yunxin_v2.translator import YunxinV2Translator


@dataclass(frozen=True, slots=True)
class VendorPlugin:
    """A vendor: its facts, how the gateway talks to it, how the sandbox pretends to be it;
    and, when its spec declares a recall API, the same for that API."""

    spec: VendorSpec
    translator: type[Translator]
    emulator: EmulatorClass
    recall_translator: type[RecallTranslator] | None = None
    recall_emulator: EmulatorClass | None = None

    def __post_init__(self) -> None:
        # One declaration: the translators and the emulators read the same spec object.
        parts = (self.translator, self.emulator, self.recall_translator, self.recall_emulator)
        for part in parts:
            if part is not None and part.spec is not self.spec:
                raise ValueError(f"{part.__name__} does not point at {self.spec.vendor}'s spec")
        recalls = self.recall_translator is not None and self.recall_emulator is not None
        if recalls != (self.spec.recall is not None):
            raise ValueError(f"{self.spec.vendor}: a recall API needs its translator and emulator")

    @property
    def vendor(self) -> str:
        return self.spec.vendor


VENDORS: Final[tuple[VendorPlugin, ...]] = (
    VendorPlugin(
        YUNXIN_V1,
        YunxinV1Translator,
        YunxinV1Emulator,
        YunxinV1RecallTranslator,
        YunxinV1RecallEmulator,
    ),
    VendorPlugin(
        YUNXIN_V2,
        YunxinV2Translator,
        YunxinV2Emulator,
        YunxinV2RecallTranslator,
        YunxinV2RecallEmulator,
    ),
    VendorPlugin(
        TENCENT, TencentTranslator, TencentEmulator, TencentRecallTranslator, TencentRecallEmulator
    ),
    VendorPlugin(RONGCLOUD, RongCloudTranslator, RongCloudEmulator),
)

BY_VENDOR: Final[dict[str, VendorPlugin]] = {plugin.vendor: plugin for plugin in VENDORS}
