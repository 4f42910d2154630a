"""Configuration loading: typed values, ${ENV} secrets, errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from imgate._config import ConfigError, load_config, parse_config, sandbox_config

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
    assert {b.name for b in config.backends} == {"yunxin_v1", "yunxin_v2", "tencent"}
    assert all(b.sandbox and b.base_url == "http://127.0.0.1:9" for b in config.backends)
    assert config.sandbox


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
