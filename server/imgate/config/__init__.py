"""The gateway configuration: typed, frozen, loaded from TOML with ${ENV}.

Entry points are in `load` (load_config, parse_config, sandbox_config); the dataclasses
in `model`; ConfigError in `errors`; one module per kind of table beside them.
"""
