"""The vendors: one folder each (spec, translator, emulator), listed in the registry."""
