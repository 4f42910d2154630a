"""Translator tests: table-driven, no network."""
