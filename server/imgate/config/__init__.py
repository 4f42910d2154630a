"""The gateway configuration: typed, frozen, loaded from TOML with ${ENV}."""
