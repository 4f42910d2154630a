"""Vendor sandbox tests: the emulators accept what the vendor accepts, refuse the rest."""
