from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio import Redis

from admin.audit import AuditEntry, AuditLog
from admin.channels import ChannelConfig
from admin.setup import create_admin
from bots.base import CommandCall
from knowledge.base import StoreUnavailable
from parley.message import thread_key
from parley.settings import Settings
from tests.fakes.platform import FakeCommandPlatform
from tests.support.config import make_settings
from tests.support.processes import free_port
from workers import keys

ADMIN, ANN, BOB = "UADMIN", "UANN", "UBOB"


async def _model_info() -> dict[str, Any]:
    return {"model_id": "meta-llama/Meta-Llama-3-8B-Instruct"}


async def _model_down() -> dict[str, Any]:
    raise ConnectionError("refused")


async def _knowledge_bases() -> list[str]:
    return ["it-runbooks", "hr-policies"]


def _settings(**values: Any) -> Settings:
    return make_settings(
        admins=f"slack:{ADMIN}, teams:00000000-0000-0000-0000-00000000000a", **values
    )


class Console:
    """Types commands as one person in one channel."""

    def __init__(self, aredis: Redis, settings: Settings, model: Any = _model_info) -> None:
        self.admin = create_admin(settings, aredis, model, _knowledge_bases)
        self.platform = FakeCommandPlatform()
        self.aredis = aredis

    async def run(self, text: str, *, user: str = ADMIN, channel: str = "C1") -> str:
        call = CommandCall(
            platform="slack", tenant="T1", channel=channel, user=user, text=text, prefix="/parley"
        )
        return await self.admin.commands.run(call, self.platform)

    async def config(self, channel: str = "C1") -> ChannelConfig:
        return await self.admin.channels.load("slack", "T1", channel)

    async def audit(self) -> list[AuditEntry]:
        return [e async for e in AuditLog(self.aredis, max_entries=1000).entries()]


@pytest.fixture
def console(aredis: Redis) -> Console:
    return Console(aredis, _settings())


async def test_help_lists_every_command_and_unknown_commands_get_it_too(
    console: Console,
) -> None:
    for text in ("", "help"):
        reply = await console.run(text, user=ANN)
        for command in ("status", "enable", "mode", "persona", "set temperature", "forget me"):
            assert f"/parley {command}" in reply
    reply = await console.run("frobnicate", user=ANN)
    assert reply.startswith("I don't know `/parley frobnicate`")
    assert "/parley status" in reply


async def test_a_members_change_is_refused_audited_and_changes_nothing(console: Console) -> None:
    reply = await console.run("set temperature 1", user=ANN)
    assert "Only admins of this channel" in reply
    assert "/parley status" in reply
    assert await console.config() == ChannelConfig()
    [entry] = await console.audit()
    assert (entry.actor, entry.action, entry.outcome) == (ANN, "set temperature", "refused")
    assert entry.channel == "C1"


async def test_an_admin_changes_the_persona_and_the_audit_shows_old_and_new(
    console: Console,
) -> None:
    persona = "You are the IT helpdesk.\nAnswer in two sentences."
    reply = await console.run(f"persona set {persona}")
    assert "persona is set" in reply
    assert (await console.config()).persona == persona, "line breaks are kept"
    shown = await console.run("persona show")
    assert persona in shown
    await console.run("persona set Be brief.")
    await console.run("persona reset")
    assert (await console.config()).persona is None
    changes = [
        (e.action, e.old, e.new) for e in await console.audit() if e.action != "persona show"
    ]
    assert changes == [
        ("persona set", "", persona),
        ("persona set", persona, "Be brief."),
        ("persona reset", "Be brief.", ""),
    ]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("set temperature 5", "from 0 to 2"),
        ("set temperature hot", "from 0 to 2"),
        ("set max-tokens 0", "from 1 to 4096"),
        ("set max-tokens 100000", "from 1 to 4096"),
        ("set verbosity 3", "can't set `verbosity`"),
        ("set temperature", "set temperature <0-2>"),
        ("mode loud", "mentions, all"),
        ("persona set   ", "empty"),
        ("persona", "persona show"),
        ("enable now", "takes nothing more"),
        ("forget thread", "link"),
        ("forget thread https://example.com/not-a-message", "not a link to a message"),
        ("admins add", "naming one person"),
        ("admins add somebody", "can't tell who"),
    ],
)
async def test_invalid_input_gets_a_clear_message_and_changes_nothing(
    console: Console, text: str, says: str
) -> None:
    reply = await console.run(text)
    assert says in reply
    assert "Nothing was changed" in reply
    assert await console.config() == ChannelConfig()
    [entry] = await console.audit()
    assert entry.outcome == "invalid"
    assert entry.detail


async def test_settings_apply_and_default_brings_the_deployments_value_back(
    console: Console,
) -> None:
    assert "now 0.2" in await console.run("set temperature 0.2")
    assert "now 300" in await console.run("set max-tokens 300")
    assert "only when mentioned" in await console.run("mode mentions")
    assert "every new message" in await console.run("mode all")
    config = await console.config()
    assert (config.temperature, config.max_tokens, config.mode) == (0.2, 300, "all")
    assert "the default (0.7)" in await console.run("set temperature default")
    assert (await console.config()).temperature is None


async def test_enable_and_disable(console: Console) -> None:
    assert "no longer answers" in await console.run("disable")
    assert (await console.config()).enabled is False
    assert "It already was" in await console.run("disable")
    assert "now answers" in await console.run("enable")
    assert (await console.config()).enabled is True


async def test_channel_admins_are_managed_per_channel(console: Console) -> None:
    assert "is now an admin" in await console.run(f"admins add @{ANN}")
    assert "already is an admin" in await console.run(f"admins add @{ANN}")
    # Ann is an admin of C1 only.
    assert "is set" in await console.run("persona set Be kind.", user=ANN)
    assert "Only admins" in await console.run("persona set Be kind.", user=ANN, channel="C2")
    assert "is now an admin" in await console.run(f"admins add @{BOB}", user=ANN)
    listing = await console.run("admins list", user=BOB)
    assert f"@{ANN}, @{BOB}" in listing
    assert f"@{ADMIN}" in listing
    assert "through PARLEY_ADMINS" in await console.run(f"admins remove @{ADMIN}", user=ANN)
    assert "no longer an admin" in await console.run(f"admins remove @{BOB}", user=ANN)
    assert "Only admins" in await console.run("disable", user=BOB)


async def test_workspace_admins_count_only_when_allowed(aredis: Redis) -> None:
    off = Console(aredis, _settings())
    off.platform.workspace_admins = {ANN}
    assert "Only admins" in await off.run("disable", user=ANN)
    assert off.platform.admin_checks == [], "the platform is not even asked"
    on = Console(aredis, _settings(slack_workspace_admins=True))
    on.platform.workspace_admins = {ANN}
    assert "no longer answers" in await on.run("disable", user=ANN)
    assert "workspace admin" in await on.run("status", user=ANN)


async def test_forget_thread_needs_an_admin_of_the_linked_channel(
    console: Console, aredis: Redis
) -> None:
    key = thread_key("slack", "T1", "C2", "1700000000.000100")
    await aredis.rpush(keys.memory(key), "sealed-turn")
    await aredis.set(keys.active_thread(key), "1")
    await console.run(f"admins add @{ANN}")  # admin of C1, not of C2
    reply = await console.run("forget thread link:C2/1700000000.000100", user=ANN)
    assert "Only admins" in reply
    assert await aredis.exists(keys.memory(key))
    reply = await console.run("forget thread link:C2/1700000000.000100")
    assert "no longer remembers" in reply
    assert not await aredis.exists(keys.memory(key), keys.active_thread(key))
    entry = (await console.audit())[-1]
    assert (entry.channel, entry.action, entry.outcome) == ("C2", "forget thread", "done")


async def test_forget_me_is_for_everyone_and_the_audit_does_not_name_them(
    console: Console, aredis: Redis
) -> None:
    await aredis.sadd(keys.user_threads("slack", "T1", ANN), "slack:T1:C1:1.2")
    reply = await console.run("forget me", user=ANN)
    assert "erased what I kept about you" in reply
    assert not await aredis.exists(keys.user_threads("slack", "T1", ANN))
    [entry] = await console.audit()
    assert (entry.actor, entry.action) == ("(erased)", "forget me")


async def test_status_shows_settings_model_health_usage_and_role(
    console: Console, aredis: Redis
) -> None:
    await console.run("set temperature 0.3")
    await aredis.set(keys.worker_heartbeat("host:1"), "{}")
    await aredis.rpush("parley", "task-1", "task-2")
    await aredis.hset(
        keys.usage("slack", "T1", "C1"), mapping={"answered": 7, "failed": 1, "good": 2}
    )
    status = await console.run("status", user=ANN)
    assert "Answers: on (the default: allow)" in status
    assert "Mode: mentions" in status
    assert "Persona: the default" in status
    assert "Temperature: 0.3;" in status
    assert "max tokens: 512 (default)" in status
    assert "Meta-Llama-3-8B-Instruct" in status
    assert "1 worker process(es), 2 message(s) queued" in status
    assert "7 answered, 1 failed" in status
    assert ":+1: 2 :-1: 0" in status
    assert "You: member" in status
    assert "bootstrap admin" in await console.run("status")


async def test_status_says_when_the_model_or_the_workers_are_down(aredis: Redis) -> None:
    console = Console(aredis, _settings(), model=_model_down)
    status = await console.run("status")
    assert "not reachable" in status
    assert "no worker running" in status


async def test_redis_down_gets_a_clear_message() -> None:
    down = Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    console = Console(down, _settings())
    reply = await console.run("disable")
    assert "cannot reach its store (Redis)" in reply
    assert "nothing was changed" in reply
    await down.aclose()


def test_bootstrap_admins_are_parsed_and_checked() -> None:
    settings = _settings()
    assert settings.admin_ids == {
        ("slack", ADMIN),
        ("teams", "00000000-0000-0000-0000-00000000000a"),
    }
    with pytest.raises(ValueError, match="platform-qualified"):
        make_settings(admins="UADMIN")


async def test_admins_choose_the_channels_knowledge_bases(console: Console) -> None:
    listing = await console.run("kb list")
    assert "Used in this channel: none" in listing
    assert "`hr-policies`, `it-runbooks`" in listing
    assert "now come from `hr-policies`" in await console.run("kb use hr-policies")
    assert "`hr-policies`, `it-runbooks`" in await console.run("kb use it-runbooks,hr-policies")
    assert (await console.config()).knowledge_bases == ("hr-policies", "it-runbooks")
    assert "`it-runbooks`" in await console.run("kb off hr-policies")
    assert "Knowledge bases: `it-runbooks`" in await console.run("status")
    assert "no knowledge base" in await console.run("kb off")
    assert (await console.config()).knowledge_bases == ()
    # Another channel is not affected, and members cannot change it.
    assert "Only admins" in await console.run("kb use hr-policies", user=ANN, channel="C2")


async def test_a_knowledge_store_that_is_down_is_said_plainly(
    aredis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    async def down() -> list[str]:
        raise StoreUnavailable("PostgreSQL at postgresql://db:5432/parley failed (refused)")

    console = Console(aredis, _settings())
    console.admin = create_admin(_settings(), aredis, _model_info, down)
    for text in ("kb list", "kb use hr-policies"):
        reply = await console.run(text)
        assert "cannot read its knowledge bases right now" in reply
        assert "settings are as they were" in reply
        assert "postgresql://" not in reply  # where the store lives is for the log only
    assert "failed (refused)" in caplog.text
    assert (await console.config()).knowledge_bases == ()


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("kb use payroll", "There is no knowledge base `payroll`"),
        ("kb use", "kb list` shows the names"),
        ("kb use ../etc", "is not a knowledge base name"),
        ("kb drop", "kb list"),
    ],
)
async def test_unknown_knowledge_bases_are_refused(console: Console, text: str, says: str) -> None:
    reply = await console.run(text)
    assert says in reply
    assert "Nothing was changed" in reply
    assert (await console.config()).knowledge_bases == ()


async def test_the_audit_never_keeps_what_people_typed_into_a_bad_command(
    console: Console,
) -> None:
    await console.run("admins add john.smith@acme.com")
    await console.run("kb use John-Smith@acme")
    for entry in await console.audit():
        assert entry.outcome == "invalid"
        assert "john" not in entry.detail.lower()
        assert "`…`" in entry.detail
