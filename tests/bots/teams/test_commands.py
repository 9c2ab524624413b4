"""`config …` commands and ratings in Teams, in process: activities POSTed with Bot Framework
tokens into the Teams ingress over loopback HTTP, the real admin package on real Redis, and
the fake Bot Connector receiving the answers (1:1 chats opened through POST /v3/conversations,
members looked up)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from admin.audit import AuditEntry, AuditLog
from admin.setup import Admin, create_admin
from bots.shortcodes import SHORTCODES, render_shortcodes
from bots.teams.commands import (
    NOT_PRIVATE,
    TeamsCommandRunner,
    mark_mentions,
    parse_command,
    parse_thread_link,
)
from bots.teams.inbound import ROUTE, TeamsIngress, strip_mentions
from parley.message import thread_key
from parley.server import create_web_app
from parley.settings import Settings
from tests.fakes.bot_framework import APP_ID, APP_PASSWORD, TENANT_ID, FakeBotFramework
from tests.support.config import make_sealer, make_settings
from tests.support.queue import queued_messages
from workers import keys
from workers.celery_app import create_celery, publisher
from workers.intake import QueueIntake

QUEUE = "teams-commands-test"
CHANNEL = "19:hr-questions@thread.tacv2"
ADMIN, ADMIN_AAD = "29:admin", "aad-admin"
BOB, BOB_AAD = "29:bob", "aad-bob"
Client = TestClient[Any, Any]


@pytest.fixture
def fake_bf() -> Iterator[FakeBotFramework]:
    with FakeBotFramework() as bf:
        yield bf


@dataclass
class Teams:
    client: Client
    bf: FakeBotFramework
    ingress: TeamsIngress
    admin: Admin
    redis: Redis

    @property
    def commands(self) -> TeamsCommandRunner:
        assert self.ingress.commands is not None
        return self.ingress.commands

    async def deliver(self, activity: dict[str, Any]) -> int:
        resp = await self.client.post(
            ROUTE, data=json.dumps(activity).encode(), headers=self.bf.auth_header()
        )
        return resp.status

    async def command(self, activity: dict[str, Any]) -> None:
        """Deliver a command and wait for its answer to be sent."""
        assert await self.deliver(activity) == 202
        await self.commands.join()

    def private(self, user: str) -> list[str]:
        """What the bot wrote to `user` in their 1:1 chat."""
        conversation = self.bf.personal_chats.get(user)
        return self.bf.texts(conversation) if conversation else []

    async def audit(self) -> list[AuditEntry]:
        return [entry async for entry in AuditLog(self.redis, max_entries=1000).entries()]


def _settings(redis_url: str, bf: FakeBotFramework, **values: Any) -> Settings:
    return make_settings(
        **{
            "microsoft_app_id": APP_ID,
            "microsoft_app_password": APP_PASSWORD,
            "microsoft_app_tenant_id": TENANT_ID,
            "teams_openid_metadata_url": bf.openid_url,
            "teams_login_url": bf.login_url,
            "redis_url": redis_url,
            "queue_name": QUEUE,
            "admins": f"teams:{ADMIN_AAD}",
            **values,
        }
    )


async def _model_info() -> dict[str, Any]:
    return {"model_id": "meta-llama/Meta-Llama-3-8B-Instruct"}


@pytest.fixture
async def teams(redis_url: str, aredis: Redis, fake_bf: FakeBotFramework) -> AsyncIterator[Teams]:
    settings = _settings(redis_url, fake_bf)
    admin = create_admin(settings, aredis, _model_info)
    intake = QueueIntake(
        aredis,
        publisher(create_celery(settings), settings),
        make_sealer(),
        dedupe_ttl=600,
        thread_ttl=600,
        channels=admin.channels,
    )
    ingress = TeamsIngress(settings, intake, commands=admin.commands, feedback=admin.feedback)
    client: Client = TestClient(
        TestServer(
            create_web_app(routes=[web.post(ROUTE, ingress.handle)], redis=aredis),
            host="127.0.0.1",
        )
    )
    await client.start_server()
    try:
        yield Teams(client, fake_bf, ingress, admin, aredis)
    finally:
        if ingress.commands is not None:
            await ingress.commands.join()
        await client.close()


def _queued(sync_redis: redis.Redis) -> list[dict[str, Any]]:
    return [m.model_dump() for m in queued_messages(sync_redis, QUEUE)]


# -- commands in channels: answered in a 1:1 chat ----------------------------------------


async def test_a_members_set_is_refused_privately_and_audited(
    teams: Teams, sync_redis: redis.Redis
) -> None:
    bf = teams.bf
    activity = bf.channel_message("config set temperature 1", user=BOB, aad_object_id=BOB_AAD)
    thread = activity["conversation"]["id"]
    await teams.command(activity)

    [answer] = teams.private(BOB)
    assert answer.startswith("⛔ Only admins of this channel can use `@Parley config set`")
    assert ":no_entry:" not in answer
    assert bf.texts(thread) == [], "nothing in the channel"
    assert _queued(sync_redis) == [], "a command is not a question"
    config = await teams.admin.channels.load("teams", TENANT_ID, CHANNEL)
    assert config.temperature is None
    [entry] = await teams.audit()
    assert (entry.platform, entry.tenant, entry.channel) == ("teams", TENANT_ID, CHANNEL)
    assert (entry.actor, entry.action, entry.outcome) == (BOB_AAD, "set temperature", "refused")
    # The 1:1 chat was opened as Teams wants it: the bot, one member, the tenant.
    [create] = bf.calls_to("create")[-1:]
    assert create.body["members"] == [{"id": BOB}]
    assert create.body["isGroup"] is False
    assert create.body["tenantId"] == TENANT_ID
    assert create.headers["Authorization"].startswith("Bearer fake-access-")


async def test_a_bootstrap_admin_sets_persona_and_mode_from_a_channel(
    teams: Teams, sync_redis: redis.Redis
) -> None:
    bf = teams.bf
    persona = "You are the HR helper of Acme.\nAnswer in two sentences & cite the handbook."
    text = f"config persona set {persona}"
    await teams.command(bf.channel_message(text, user=ADMIN, aad_object_id=ADMIN_AAD))
    await teams.command(bf.channel_message("config mode all", user=ADMIN, aad_object_id=ADMIN_AAD))
    await teams.command(bf.channel_message("CONFIG help", user=ADMIN, aad_object_id=ADMIN_AAD))

    persona_set, mode_set, help_text = teams.private(ADMIN)
    assert persona_set.startswith("📝 This channel's persona is set")
    assert mode_set.startswith("💬 Parley now answers every new message in this channel")
    # Help shows the commands as they are typed here, with the bot's name as mentioned.
    assert "`@Parley config mode mentions | all`" in help_text
    config = await teams.admin.channels.load("teams", TENANT_ID, CHANNEL)
    assert (config.persona, config.mode) == (persona, "all")
    actions = [(e.actor, e.action, e.outcome) for e in await teams.audit()]
    assert actions == [
        (ADMIN_AAD, "persona set", "done"),
        (ADMIN_AAD, "mode all", "done"),
    ]
    assert _queued(sync_redis) == []
    # Every answer went to the admin's 1:1 chat, formatted as Markdown.
    sends = [c for c in bf.calls_to("send") if c.conversation_id == bf.personal_chats[ADMIN]]
    assert sends
    assert all(c.body["textFormat"] == "markdown" for c in sends)
    assert all(c.body["from"]["id"] == bf.bot_id for c in sends)


async def test_the_answer_falls_back_to_the_thread_when_teams_refuses_a_1_1_chat(
    teams: Teams,
) -> None:
    bf = teams.bf
    bf.refuse_personal_chat("29:dave")
    activity = bf.channel_message(
        "config status", root="1700000000300", user="29:dave", aad_object_id="aad-dave"
    )
    thread = activity["conversation"]["id"]
    await teams.command(activity)

    assert bf.calls_to("create", status=403)
    assert teams.private("29:dave") == []
    [answer] = bf.messages(thread)
    assert answer["text"].startswith(NOT_PRIVATE)
    assert "**Parley in this channel**" in answer["text"]
    assert "🟢 meta-llama/Meta-Llama-3-8B-Instruct" in answer["text"]
    assert answer["reply_to_id"] == activity["id"]


async def test_a_group_chat_command_is_answered_in_a_1_1_chat(teams: Teams) -> None:
    bf = teams.bf
    await teams.command(bf.group_message("config status"))
    [answer] = teams.private("29:carol")
    assert answer.startswith("**Parley in this channel**")
    assert bf.texts("19:group-chat@thread.v2") == []


# -- commands in a personal chat: answered there -----------------------------------------


async def test_forget_me_in_a_personal_chat_erases_ratings_and_is_audited_anonymously(
    teams: Teams,
) -> None:
    bf = teams.bf
    conversation = {"conversationType": "personal", "id": "a:1personal-alice"}
    answer_id = "1700000000400"
    await _stage_answer(teams, "a:1personal-alice", answer_id)
    invoke = bf.feedback_invoke(answer_id, "like", conversation=conversation)
    assert await teams.deliver(invoke) == 200
    assert (await teams.admin.feedback.usage("teams", TENANT_ID, "a:1personal-alice")).good == 1

    command = bf.personal_message("config forget me")
    await teams.command(command)
    [reply] = bf.messages("a:1personal-alice")
    assert reply["text"].startswith("🗑️ Done. I erased what I kept about you")
    assert "1 rating(s)" in reply["text"]
    assert reply["reply_to_id"] == command["id"]
    assert bf.calls_to("create") == [], "a personal chat is private already"
    message_key = f"teams:{TENANT_ID}:a:1personal-alice:question"
    assert await teams.redis.hgetall(keys.ratings(message_key)) == {}
    assert not await teams.redis.exists(keys.user_ratings("teams", TENANT_ID, "aad-alice"))
    [entry] = await teams.audit()
    assert (entry.actor, entry.action) == ("(erased)", "forget me")


async def test_a_redelivered_command_runs_once(teams: Teams) -> None:
    activity = teams.bf.channel_message("config mode all", user=ADMIN, aad_object_id=ADMIN_AAD)
    await teams.command(activity)
    await teams.command(activity)  # Teams retries a delivery it thinks failed
    assert len(teams.private(ADMIN)) == 1
    assert len(await teams.audit()) == 1


async def test_admins_add_resolves_a_mention_to_its_azure_ad_id(teams: Teams) -> None:
    bf = teams.bf
    bf.add_member("29:dana", "aad-dana", "Dana Smith")
    # New Teams writes one tag per name part, each with its own entity for the same person.
    activity = bf.channel_message(
        "config admins add <at>Dana</at> <at>Smith</at>", user=ADMIN, aad_object_id=ADMIN_AAD
    )
    activity["entities"] += [
        {"type": "mention", "text": f"<at>{part}</at>", "mentioned": {"id": "29:dana"}}
        for part in ("Dana", "Smith")
    ]
    await teams.command(activity)
    [added] = teams.private(ADMIN)
    assert added == "🔑 Dana Smith (`aad-dana`) is now an admin of this channel."
    [lookup] = bf.calls_to("member")
    # Looked up in the team's roster, which the channel's activity names.
    assert (lookup.conversation_id, lookup.activity_id) == ("19:team@thread.tacv2", "29:dana")

    # Dana is now an admin here (matched by the id her messages carry) and nowhere else.
    await teams.command(
        bf.channel_message("config disable", user="29:dana", aad_object_id="aad-dana")
    )
    assert teams.private("29:dana")[-1].startswith("💤 Parley no longer answers")
    other = bf.channel_message(
        "config disable", channel="19:it@thread.tacv2", user="29:dana", aad_object_id="aad-dana"
    )
    await teams.command(other)
    assert teams.private("29:dana")[-1].startswith("⛔")

    # A bare Azure AD object id works too; someone the roster does not know does not.
    guid = "0F1E2D3C-4B5A-6978-8796-A5B4C3D2E1F0"
    await teams.command(
        bf.channel_message(f"config admins add {guid}", user=ADMIN, aad_object_id=ADMIN_AAD)
    )
    assert teams.private(ADMIN)[-1] == f"🔑 `{guid.lower()}` is now an admin of this channel."
    stranger = bf.channel_message(
        "config admins add <at>Eve</at>", user=ADMIN, aad_object_id=ADMIN_AAD
    )
    stranger["entities"].append(
        {"type": "mention", "text": "<at>Eve</at>", "mentioned": {"id": "29:eve"}}
    )
    await teams.command(stranger)
    assert "I can't tell who `<@29:eve>` is" in teams.private(ADMIN)[-1]
    admins = await teams.redis.smembers(keys.channel_admins("teams", TENANT_ID, CHANNEL))
    assert admins == {"aad-dana", guid.lower()}


async def test_forget_thread_inside_a_thread_or_by_a_teams_link(teams: Teams) -> None:
    bf = teams.bf
    root = "1700000000500"
    key = thread_key("teams", TENANT_ID, CHANNEL, root)
    await teams.redis.set(keys.memory(key), "sealed turns")
    inside = bf.channel_message(
        "config forget thread", root=root, user=ADMIN, aad_object_id=ADMIN_AAD
    )
    await teams.command(inside)
    assert teams.private(ADMIN)[-1].startswith("🗑️ Done. Parley no longer remembers")
    assert not await teams.redis.exists(keys.memory(key))

    # From the 1:1 chat, by the link Teams copies for a reply in that thread.
    await teams.redis.set(keys.memory(key), "sealed turns")
    link = (
        "https://teams.microsoft.com/l/message/19%3Ahr-questions%40thread.tacv2/1700000000555"
        f"?tenantId={TENANT_ID}&groupId=abc&parentMessageId={root}&teamName=HR"
    )
    by_link = bf.personal_message(
        f"config forget thread {link}", user=ADMIN, aad_object_id=ADMIN_AAD
    )
    await teams.command(by_link)
    assert not await teams.redis.exists(keys.memory(key))
    entries = [(e.channel, e.action, e.old) for e in await teams.audit()]
    assert entries == [(CHANNEL, "forget thread", root)] * 2

    # A new post is no thread to forget: it asks for a link.
    await teams.command(
        bf.channel_message("config forget thread", user=ADMIN, aad_object_id=ADMIN_AAD)
    )
    assert "Nothing was changed" in teams.private(ADMIN)[-1]


# -- what is not a command ---------------------------------------------------------------


async def test_only_addressed_messages_starting_with_config_are_commands(
    teams: Teams, sync_redis: redis.Redis
) -> None:
    bf = teams.bf
    await teams.command(bf.channel_message("configure the VPN for me?"))
    assert await teams.deliver(bf.channel_message("config mode all", mention=None)) == 200
    await teams.commands.join()
    assert [t["text"] for t in _queued(sync_redis)] == ["configure the VPN for me?"]
    assert bf.calls_to("create") == []
    assert await teams.audit() == []


# -- mode all and the message fields -----------------------------------------------------


async def test_mode_all_queues_new_channel_posts_without_a_mention(
    teams: Teams, sync_redis: redis.Redis
) -> None:
    bf = teams.bf
    quiet = bf.channel_message("who approves travel?", mention=None)
    assert await teams.deliver(quiet) == 200  # mentions only, by default
    await teams.command(bf.channel_message("config mode all", user=ADMIN, aad_object_id=ADMIN_AAD))

    post = bf.channel_message("who approves travel?", mention=None)
    assert await teams.deliver(post) == 202
    reply_elsewhere = bf.channel_message("side chat", root="1700000000600", mention=None)
    assert await teams.deliver(reply_elsewhere) == 200, "a thread Parley is not part of"
    other_channel = bf.channel_message("hello", channel="19:it@thread.tacv2", mention=None)
    assert await teams.deliver(other_channel) == 200
    mention = bf.channel_message("and for contractors?")
    personal = bf.personal_message("my own question")
    for activity in (mention, personal):
        assert await teams.deliver(activity) == 202

    queued = {t["text"]: (t["addressed"], t["direct"]) for t in _queued(sync_redis)}
    assert queued == {
        "who approves travel?": (False, False),  # read because of mode all
        "and for contractors?": (True, False),
        "my own question": (True, True),
    }
    [unmentioned] = [m for m in queued_messages(sync_redis, QUEUE) if not m.addressed]
    assert unmentioned.thread == post["id"], "a new post is its own thread"


# -- ratings -----------------------------------------------------------------------------


async def _stage_answer(teams: Teams, conversation: str, activity_id: str) -> str:
    """Record an answer as the worker does when it finishes one; returns its message key."""
    message_key = f"teams:{TENANT_ID}:{conversation}:question"
    async with teams.redis.pipeline(transaction=True) as pipe:
        teams.admin.feedback.stage_answer(
            pipe,
            platform="teams",
            tenant=TENANT_ID,
            channel=conversation,
            message_ids=[f"{conversation}:{activity_id}"],
            message_key=message_key,
            model="meta-llama/Meta-Llama-3-8B-Instruct",
        )
        await pipe.execute()
    return message_key


async def test_feedback_buttons_and_likes_rate_an_answer(teams: Teams) -> None:
    bf = teams.bf
    answer_id = "1700000000700"
    root = "1700000000690"
    thread = {"conversationType": "channel", "id": f"{CHANNEL};messageid={root}"}
    message_key = await _stage_answer(teams, CHANNEL, answer_id)

    async def usage() -> tuple[int, int]:
        counts = await teams.admin.feedback.usage("teams", TENANT_ID, CHANNEL)
        return counts.good, counts.bad

    resp = await teams.client.post(
        ROUTE,
        data=json.dumps(bf.feedback_invoke(answer_id, "dislike", conversation=thread)).encode(),
        headers=bf.auth_header(),
    )
    assert resp.status == 200
    assert await resp.json() == {"status": 200}, "an invoke response"
    assert await usage() == (0, 1)
    # The button again, changed: the newest rating counts, once per person.
    like = bf.feedback_invoke(answer_id, "like", conversation=thread)
    assert await teams.deliver(like) == 200
    assert await usage() == (1, 0)

    # Bob likes it; a heart means nothing; taking the like back withdraws it.
    liked = bf.reaction(
        answer_id, conversation=thread, added=("like", "heart"), user=BOB, aad_object_id=BOB_AAD
    )
    assert await teams.deliver(liked) == 200
    assert await usage() == (2, 0)
    unliked = bf.reaction(
        answer_id, conversation=thread, removed=("like",), user=BOB, aad_object_id=BOB_AAD
    )
    assert await teams.deliver(unliked) == 200
    assert await usage() == (1, 0)
    assert dict(await teams.admin.feedback.ratings(message_key)) == {"good": 1}

    # Messages that are not Parley's answers, and malformed feedback.
    stranger = bf.reaction("1700000000999", conversation=thread, added=("like",))
    assert await teams.deliver(stranger) == 200
    odd = bf.feedback_invoke(answer_id, "meh", conversation=thread)
    assert await teams.deliver(odd) == 400
    assert await usage() == (1, 0)


# -- pieces ------------------------------------------------------------------------------


def _command_of(text: str, entities: list[dict[str, Any]]) -> str | None:
    bots = {"28:bot"}
    marked = mark_mentions(text, entities, bots)
    return parse_command(strip_mentions(marked, entities, bots)[0])


def test_command_text_is_read_after_the_bots_mention() -> None:
    bot = {"type": "mention", "text": "<at>HR Helper</at>", "mentioned": {"id": "28:bot"}}
    assert _command_of("<at>HR Helper</at> config  mode all", [bot]) == "mode all"
    assert _command_of("Config", []) == ""
    assert _command_of("config\u00a0status", []) == "status"
    assert _command_of("configure the VPN", []) is None
    assert _command_of("please config mode all", []) is None
    assert _command_of("config persona set Line one\nLine  two", []) == (
        "persona set Line one\nLine two"
    )
    link = '<a href="https://teams.microsoft.com/l/message/19:c@thread.tacv2/1?a=1&amp;b=2">x</a>'
    assert _command_of(f"config forget thread {link}", []) == (
        "forget thread https://teams.microsoft.com/l/message/19:c@thread.tacv2/1?a=1&b=2"
    )
    dana = [
        {"type": "mention", "text": "<at>Dana</at>", "mentioned": {"id": "29:dana"}},
        {"type": "mention", "text": "<at>Smith</at>", "mentioned": {"id": "29:dana"}},
    ]
    assert _command_of("config admins add <at>Dana</at> <at>Smith</at>", [bot, *dana]) == (
        "admins add <@29:dana>"
    )


def test_teams_message_links_name_their_thread() -> None:
    base = "https://teams.microsoft.com/l/message"
    channel = "19:hr-questions@thread.tacv2"
    encoded = "19%3Ahr-questions%40thread.tacv2"
    # A top-level post: the message is the thread's root.
    assert parse_thread_link(f"{base}/{encoded}/1700000000001?tenantId=t&groupId=g") == (
        channel,
        "1700000000001",
    )
    # A reply: parentMessageId names the root.
    assert parse_thread_link(
        f"{base}/{channel}/1700000000009?tenantId=t&parentMessageId=1700000000001"
    ) == (channel, "1700000000001")
    # Some links name the thread in the conversation id itself.
    assert parse_thread_link(f"{base}/{encoded}%3Bmessageid%3D1700000000001/1700000000001") == (
        channel,
        "1700000000001",
    )
    # A group chat is one thread; its links say so in their context.
    chat = "19:abc123@thread.v2"
    context = "context=%7B%22contextType%22%3A%22chat%22%7D"
    assert parse_thread_link(f"{base}/{chat}/1700000000002?{context}") == (chat, chat)
    assert parse_thread_link(f"{base}/{chat}/1700000000002") == (chat, chat)
    for bad in (
        "https://example.com/not/a/message",
        f"http://teams.microsoft.com/l/message/{encoded}/1",
        "1700000000001",
        f"{base}/{encoded}",
        "https://[::1",
    ):
        assert parse_thread_link(bad) is None, bad


def test_every_shortcode_the_commands_write_shows_as_an_emoji() -> None:
    source = (Path(__file__).resolve().parents[3] / "admin" / "commands.py").read_text()
    used = set(re.findall(r":[a-z0-9_+-]+:", source))
    assert used, "admin/commands.py writes shortcodes"
    missing = sorted(code for code in used if code not in SHORTCODES)
    assert missing == []
    assert render_shortcodes(":warning: careful :unknown_code: :+1: 3") == (
        "⚠️ careful :unknown_code: 👍 3"
    )
