from __future__ import annotations

import base64

import pytest

from parley.settings import Settings, SettingsError, load_settings


def test_defaults_follow_the_documented_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_REDIS_URL", "redis://redis:6379/1")
    monkeypatch.setenv("TGI_URL", "http://tgi:80")
    monkeypatch.setenv("PARLEY_MAX_NEW_TOKENS", "256")
    settings = load_settings()
    assert settings.redis_url == "redis://redis:6379/1"
    assert settings.effective_broker_url == "redis://redis:6379/1", "broker defaults to Redis"
    assert settings.tgi_url == "http://tgi:80"
    assert settings.max_new_tokens == 256
    assert settings.context_tokens == 8192
    assert settings.memory_ttl_seconds == 7 * 24 * 3600
    assert settings.port == 3000
    assert settings.slack_api_url == "https://slack.com/api/"


def test_an_invalid_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_TEMPERATURE", "hot")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "PARLEY_TEMPERATURE" in str(err.value)
    assert "Traceback" not in str(err.value)


def test_max_new_tokens_must_fit_the_context(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_CONTEXT_TOKENS", "1024")
    monkeypatch.setenv("PARLEY_MAX_NEW_TOKENS", "2048")
    with pytest.raises(SettingsError, match="PARLEY_MAX_NEW_TOKENS"):
        load_settings()


def test_visibility_timeout_must_exceed_the_longest_task() -> None:
    with pytest.raises(SettingsError, match="PARLEY_VISIBILITY_TIMEOUT"):
        load_settings(visibility_timeout=60, generation_timeout=120)


def test_missing_slack_credentials_are_named() -> None:
    with pytest.raises(SettingsError, match="SLACK_BOT_TOKEN, SLACK_SIGNING_SECRET"):
        Settings().require_slack()
    with pytest.raises(SettingsError, match="xapp-"):
        Settings(slack_bot_token="xoxb-1", slack_app_token="xoxb-2").require_slack(socket_mode=True)


def test_a_malformed_encryption_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_ENCRYPTION_KEY", "too-short")
    with pytest.raises(SettingsError, match=r"PARLEY_ENCRYPTION_KEY(.|\n)*parley keygen"):
        load_settings()
    monkeypatch.setenv("PARLEY_ENCRYPTION_KEY", base64.b64encode(bytes(range(32))).decode())
    assert load_settings().encryption_key_bytes == bytes(range(32))
