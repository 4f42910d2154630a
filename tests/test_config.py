"""Configuration loading: typed values, ${ENV} secrets, errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imgate.config.errors import ConfigError
from imgate.config.load import load_config, parse_config, sandbox_config
from imgate.vendors.registry import VENDORS, VendorPlugin

GOOD = """
listen = "127.0.0.1:6000"
default_backend = "tx"

[backends.tx]
vendor = "tencent"
base_url = "https://console.tim.qq.com"
sdk_app_id = 1400000000
secret_key = "${TX_KEY}"
admin_identifier = "administrator"
recipient_limit = 6000

[backends.yx]
vendor = "yunxin_v1"
base_url = "https://api.yunxinapi.com/"
app_key = "key"
app_secret = "${YX_SECRET}"
call_limit = 60
"""
ENV = {"TX_KEY": "tx-secret-value", "YX_SECRET": "yx-secret-value"}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "imgate.toml"
    path.write_text(text)
    return path


def test_good_file_loads_with_defaults_and_env(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, GOOD), ENV)
    assert config.listen == "127.0.0.1:6000"
    tx = config.backend("")
    assert tx is not None
    assert tx.name == "tx"
    assert tx.credentials["secret_key"] == "tx-secret-value"
    assert tx.recipient_limit == 6000
    assert tx.recipients_per_call == 500  # vendor default
    yx = config.backend("yx")
    assert yx is not None
    assert yx.base_url == "https://api.yunxinapi.com"
    assert yx.call_limit == 60
    assert yx.call_window_s == 60.0
    assert yx.max_attempts == 5


def test_secrets_never_in_repr(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, GOOD), ENV)
    text = repr(config) + str(config) + repr(config.backends[0].credentials)
    assert "tx-secret-value" not in text
    assert "yx-secret-value" not in text


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (GOOD.replace('vendor = "tencent"', 'vendor = "wechat"'), "backends.tx.vendor"),
        (
            GOOD.replace("recipient_limit = 6000", "recipient_limt = 6000"),
            "backends.tx.recipient_limt",
        ),
        (GOOD.replace('admin_identifier = "administrator"\n', ""), "backends.tx.admin_identifier"),
        (GOOD.replace("call_limit = 60", 'call_limit = "sixty"'), "backends.yx.call_limit"),
        (GOOD.replace("call_limit = 60", "call_limit = 0"), "backends.yx.call_limit"),
        (GOOD.replace('listen = "127.0.0.1:6000"', 'listen = "x"\nlisten_port = 1'), "listen_port"),
        (GOOD.replace("127.0.0.1:6000", "127.0.0.1:100000"), "listen"),
        (GOOD.replace('default_backend = "tx"', 'default_backend = "nope"'), "default_backend"),
        (GOOD.replace('default_backend = "tx"', ""), "default_backend"),
        (GOOD.replace("https://api.yunxinapi.com/", "ftp://x/path"), "backends.yx.base_url"),
        (GOOD.replace("sdk_app_id = 1400000000", 'sdk_app_id = "abc"'), "backends.tx.sdk_app_id"),
    ],
)
def test_bad_file_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(_write(tmp_path, text), ENV)
    assert error.value.key == key
    assert key in str(error.value)


def test_missing_env_var_is_named_and_secret_free(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(_write(tmp_path, GOOD), {"TX_KEY": "tx-secret-value"})
    assert error.value.key == "backends.yx.app_secret"
    assert "YX_SECRET" in str(error.value)
    assert "tx-secret-value" not in str(error.value)


def test_unreadable_and_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_config(tmp_path / "missing.toml", ENV)
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "listen = "), ENV)


def test_single_backend_is_the_default() -> None:
    raw = {
        "backends": {
            "only": {
                "vendor": "yunxin_v2",
                "base_url": "http://127.0.0.1:1",
                "app_key": "k",
                "app_secret": "s",
            }
        }
    }
    config = parse_config(raw, {})
    assert config.default_backend == "only"
    assert config.backends[0].recipients_per_call == 100


def test_sandbox_config_has_one_backend_per_vendor() -> None:
    config = sandbox_config("http://127.0.0.1:9")
    assert [b.name for b in config.backends] == [plugin.vendor for plugin in VENDORS]
    for backend, plugin in zip(config.backends, VENDORS, strict=True):
        assert dict(backend.credentials) == dict(plugin.spec.sandbox_credentials)
        assert backend.recipients_per_call == plugin.spec.limits.recipients_per_call
    assert all(b.sandbox and b.base_url == "http://127.0.0.1:9" for b in config.backends)
    assert config.sandbox


def _one_backend(extra: str, vendor: str = "yunxin_v1") -> str:
    credentials = (
        'sdk_app_id = 1400000000\nsecret_key = "k"\nadmin_identifier = "admin"\n'
        if vendor == "tencent"
        else 'app_key = "k"\napp_secret = "s"\n'
    )
    return (
        f'[backends.b]\nvendor = "{vendor}"\nbase_url = "https://h.example"\n{credentials}{extra}\n'
    )


@pytest.mark.parametrize(
    ("extra", "key", "vendor"),
    [
        ("request_timeout_s = nan", "backends.b.request_timeout_s", "yunxin_v1"),
        ("block_s = nan", "backends.b.block_s", "yunxin_v1"),
        ("block_s = inf", "backends.b.block_s", "tencent"),
        ("call_window_s = -inf", "backends.b.call_window_s", "yunxin_v2"),
        ("call_limit = 2147483648", "backends.b.call_limit", "yunxin_v1"),
        ("max_in_flight = 99999999999", "backends.b.max_in_flight", "tencent"),
        ("max_attempts = 0", "backends.b.max_attempts", "yunxin_v1"),
        ("max_response_bytes = 0", "backends.b.max_response_bytes", "yunxin_v1"),
        ("max_response_bytes = 4294967296", "backends.b.max_response_bytes", "tencent"),
        ("request_timeout_s = 1e300", "backends.b.request_timeout_s", "tencent"),
        # More than the vendor documents per call: every call would be refused.
        ("recipients_per_call = 1000", "backends.b.recipients_per_call", "yunxin_v1"),
        ("recipients_per_call = 101", "backends.b.recipients_per_call", "yunxin_v2"),
        ("recipients_per_call = 501", "backends.b.recipients_per_call", "tencent"),
        ("sdk_app_id = 4294967296", "backends.b.sdk_app_id", "tencent"),
    ],
)
def test_numbers_must_be_finite_and_in_range(extra: str, key: str, vendor: str) -> None:
    import tomllib

    text = _one_backend(extra, vendor)
    if vendor == "tencent" and extra.startswith("sdk_app_id"):
        text = text.replace("sdk_app_id = 1400000000\n", "")
    with pytest.raises(ConfigError) as error:
        parse_config(tomllib.loads(text), {})
    assert error.value.key == key


def _spec_backend(plugin: VendorPlugin, extra: str = "") -> str:
    credentials = "".join(
        f"{key} = {json.dumps(value)}\n" for key, value in plugin.spec.sandbox_credentials.items()
    )
    return f'[backends.b]\nvendor = "{plugin.vendor}"\nbase_url = "https://h.example"\n{credentials}{extra}\n'


@pytest.mark.parametrize("plugin", VENDORS, ids=lambda plugin: plugin.vendor)
def test_each_vendors_keys_and_cap_come_from_its_spec(plugin: VendorPlugin) -> None:
    import tomllib

    cap = plugin.spec.limits.recipients_per_call
    config = parse_config(tomllib.loads(_spec_backend(plugin, f"recipients_per_call = {cap}")), {})
    assert set(config.backends[0].credentials) == set(plugin.spec.credential_fields)
    with pytest.raises(ConfigError) as error:
        parse_config(tomllib.loads(_spec_backend(plugin, f"recipients_per_call = {cap + 1}")), {})
    assert error.value.key == "backends.b.recipients_per_call"
    for key in plugin.spec.credential_fields:
        text = _spec_backend(plugin)
        without = "\n".join(line for line in text.splitlines() if not line.startswith(f"{key} ="))
        with pytest.raises(ConfigError) as error:
            parse_config(tomllib.loads(without), {})
        assert error.value.key == f"backends.b.{key}"


def test_top_level_numbers_are_checked_too() -> None:
    import tomllib

    for extra, key in (
        ("shutdown_grace_s = nan", "shutdown_grace_s"),
        ("max_recipients_per_request = 3000000000", "max_recipients_per_request"),
    ):
        with pytest.raises(ConfigError) as error:
            parse_config(tomllib.loads(extra + "\n" + _one_backend("")), {})
        assert error.value.key == key


def test_env_values_work_for_float_and_int_keys() -> None:
    import tomllib

    text = _one_backend(
        'request_timeout_s = "${TIMEOUT}"\nblock_s = "${BLOCK}"\ncall_limit = "${CALLS}"'
    )
    config = parse_config(tomllib.loads(text), {"TIMEOUT": "2.5", "BLOCK": "30", "CALLS": "60"})
    backend = config.backend("")
    assert backend is not None
    assert (backend.request_timeout_s, backend.block_s, backend.call_limit) == (2.5, 30.0, 60)


@pytest.mark.parametrize("value", ["nan", "fast", "inf"])
def test_env_float_must_be_a_finite_number(value: str) -> None:
    import tomllib

    text = _one_backend('request_timeout_s = "${TIMEOUT}"')
    with pytest.raises(ConfigError) as error:
        parse_config(tomllib.loads(text), {"TIMEOUT": value})
    assert error.value.key == "backends.b.request_timeout_s"


def test_max_response_bytes_defaults_to_4_mib_and_is_configurable() -> None:
    import tomllib

    config = parse_config(tomllib.loads(_one_backend("")), {})
    assert config.backends[0].max_response_bytes == 4 << 20
    config = parse_config(tomllib.loads(_one_backend("max_response_bytes = 1024")), {})
    assert config.backends[0].max_response_bytes == 1024
    assert config.backends[0].recipients_per_call == 500


@pytest.mark.parametrize(
    ("vendor", "region", "base_url", "backup"),
    [
        ("tencent", "china", "https://console.tim.qq.com", "https://adminapi.my-imcloud.com"),
        (
            "tencent",
            "singapore",
            "https://adminapisgp.im.qcloud.com",
            "https://adminapisgp.my-imcloud.com",
        ),
        (
            "tencent",
            "jakarta",
            "https://adminapiidn.im.qcloud.com",
            "https://adminapiidn.my-imcloud.com",
        ),
        ("yunxin_v1", "china", "https://api.yunxinapi.com", "https://api-cn-bak.yunxinapi.com"),
        (
            "yunxin_v2",
            "singapore",
            "https://open-sg.yunxinapi.com",
            "https://open-sg-bak.yunxinapi.com",
        ),
    ],
)
def test_region_presets_set_primary_and_backup(
    vendor: str, region: str, base_url: str, backup: str
) -> None:
    import tomllib

    text = _one_backend(f'region = "{region}"', vendor).replace(
        'base_url = "https://h.example"\n', ""
    )
    backend = parse_config(tomllib.loads(text), {}).backends[0]
    assert (backend.base_url, backend.backup_base_url) == (base_url, backup)


def test_tencent_has_every_documented_region() -> None:
    from imgate.vendors.tencent.translator import TencentTranslator

    assert set(TencentTranslator.spec.regions) == {
        "china",
        "singapore",
        "seoul",
        "tokyo",
        "frankfurt",
        "silicon_valley",
        "jakarta",
    }


@pytest.mark.parametrize(
    ("extra", "keep_base_url", "key"),
    [
        ('region = "mars"', False, "backends.b.region"),
        ('region = "china"', True, "backends.b.base_url"),  # both: which one?
        ('backup_base_url = "ftp://x"', True, "backends.b.backup_base_url"),
    ],
)
def test_region_errors_name_the_key(extra: str, keep_base_url: bool, key: str) -> None:
    import tomllib

    text = _one_backend(extra)
    if not keep_base_url:
        text = text.replace('base_url = "https://h.example"\n', "")
    with pytest.raises(ConfigError) as error:
        parse_config(tomllib.loads(text), {})
    assert error.value.key == key


def test_sandbox_time_scale_divides_the_backends_windows_and_blocks() -> None:
    plain = {b.name: b for b in sandbox_config("http://127.0.0.1:9").backends}
    fast = {b.name: b for b in sandbox_config("http://127.0.0.1:9", time_scale=60).backends}
    assert fast["tencent"].recipient_window_s == pytest.approx(1.0)
    assert fast["yunxin_v1"].block_s == pytest.approx(1.0)
    for name, backend in fast.items():
        assert backend.call_window_s == pytest.approx(plain[name].call_window_s / 60)
        assert (backend.call_limit, backend.recipient_limit) == (
            plain[name].call_limit,
            plain[name].recipient_limit,
        )


def test_a_vendor_with_a_default_base_url_needs_none(monkeypatch: pytest.MonkeyPatch) -> None:
    # RongCloud documents one (CONTRACT §12 rule 35); the three so far need base_url/region.
    import dataclasses
    import tomllib
    import types

    from imgate.config import backends

    plugin = VENDORS[0]
    spec = dataclasses.replace(plugin.spec, default_base_url="https://api.example")
    monkeypatch.setitem(backends.BY_VENDOR, plugin.vendor, types.SimpleNamespace(spec=spec))
    text = _spec_backend(plugin).replace('base_url = "https://h.example"\n', "")
    assert parse_config(tomllib.loads(text), {}).backends[0].base_url == "https://api.example"
    monkeypatch.undo()
    with pytest.raises(ConfigError) as error:
        parse_config(tomllib.loads(text), {})
    assert error.value.key == "backends.b.base_url"


def test_recall_keys_default_per_vendor_and_are_checked(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, GOOD), ENV)
    tx, yx = config.backend("tx"), config.backend("yx")
    assert tx is not None
    assert yx is not None
    # Tencent's ids come with every send: recallable; Yunxin legacy's only when asked.
    assert (tx.recallable, tx.recall_call_limit, tx.recall_call_window_s) == (True, 200, 1.0)
    assert (yx.recallable, yx.recall_call_limit, yx.recall_block_s) == (False, 100, 10.0)
    text = GOOD + "recallable = true\nrecall_call_limit = 20\nrecall_call_window_s = 2\n"
    yx = load_config(_write(tmp_path, text), ENV).backend("yx")
    assert yx is not None
    assert (yx.recallable, yx.recall_call_limit, yx.recall_call_window_s) == (True, 20, 2.0)
    for extra, message in (
        ("recallable = 1\n", "backends.yx.recallable: expected true or false"),
        ("recall_call_limit = 0\n", "backends.yx.recall_call_limit: must be greater than 0"),
        ("recall_block_s = true\n", "backends.yx.recall_block_s: expected float"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_config(_write(tmp_path, GOOD + extra), ENV)


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        # Issue 22: `store.lease_s = 1e-7` was accepted (a replica presumed dead 100 ns
        # after its heartbeat: the others take over every batch at once, over and over).
        ("[store]\nlease_s = 1e-7", "store.lease_s"),
        ("[store]\nlease_s = 0.5", "store.lease_s"),
        ("[store]\nbatch_retention_s = 0.001", "store.batch_retention_s"),
        ("shutdown_grace_s = 1e-9", "shutdown_grace_s"),
    ],
)
def test_durations_have_sane_lower_bounds(extra: str, key: str) -> None:
    import tomllib

    if extra.startswith("[store]"):  # a table after the backend's
        text = _one_backend("") + extra + "\n"
    else:  # a top-level key before any table
        text = extra + "\n" + _one_backend("")
    with pytest.raises(ConfigError) as error:
        parse_config(tomllib.loads(text), {})
    assert error.value.key == key
    assert "at least" in str(error.value)


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("request_timeout_s = 0.001", "backends.b.request_timeout_s"),
        ("call_window_s = 1e-9", "backends.b.call_window_s"),
        ("block_s = 1e-9", "backends.b.block_s"),
    ],
)
def test_backend_durations_have_sane_lower_bounds(extra: str, key: str) -> None:
    import tomllib

    with pytest.raises(ConfigError) as error:
        parse_config(tomllib.loads(_one_backend(extra)), {})
    assert error.value.key == key
    assert "at least" in str(error.value)
