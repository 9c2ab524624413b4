"""The admin commands, for every platform: parse, check the role, apply, audit, reply.

Platforms hand in a CommandCall and a CommandPlatform (bots/base.py) and show the returned
Markdown privately. Bad input never changes anything and gets a reply that says what is
allowed. Everyone may run `help`, `status` and `forget me`; the rest is for admins, and a
refused attempt is audited like an action.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from admin.audit import ERASED_USER, AuditLog, Outcome
from admin.channels import (
    ChannelStore,
    Field,
    InvalidSetting,
    join_kbs,
    parse_kb_name,
    parse_max_tokens,
    parse_mode,
    parse_persona,
    parse_temperature,
)
from admin.feedback import FeedbackStore
from admin.health import ServiceHealth
from admin.roles import Role, Roles
from bots.base import CommandCall, CommandPlatform
from knowledge.base import KnowledgeError
from parley.message import thread_key
from parley.settings import Settings
from workers.erasure import Erasure

log = logging.getLogger(__name__)

ModelInfo = Callable[[], Awaitable[dict[str, Any]]]
KnowledgeBases = Callable[[], Awaitable[list[str]]]
Health = Callable[[], Awaitable[ServiceHealth]]

MODEL_PROBE_SECONDS = 1.5
_WORD = re.compile(r"[a-z][a-z-]{0,30}")
_QUOTED = re.compile(r"`[^`]*`")


class Refused(Exception):
    """The caller may not run this command here."""


class Invalid(Exception):
    """The command is malformed; the message says how to write it."""


HELP_LINES = (
    ("help", "this list"),
    ("status", "this channel's settings, the model, health and usage"),
    ("enable | disable", "answer in this channel, or not at all"),
    ("mode mentions | all", "answer only when mentioned, or every new message in the channel"),
    ("persona show | set <text> | reset", "this channel's instructions to the model"),
    ("set temperature <0-2> | default", "how varied answers are (lower: more focused)"),
    ("set max-tokens <n> | default", "the longest answer, in tokens"),
    ("forget thread <message link>", "erase what Parley keeps of one thread"),
    ("forget me", "erase everything Parley keeps about you, in every channel"),
    ("admins list | add @user | remove @user", "this channel's admins"),
    ("kb list | use <name> | off [<name>]", "which document collections answers come from"),
)


def help_text(prefix: str) -> str:
    lines = [
        "**Parley** answers questions with your company's own language model; nothing leaves "
        "your network. Mention Parley with your question and it answers in a thread; reply in "
        "the thread to follow up.",
        "",
        "**Commands**",
        *(f"- `{prefix} {usage}`: {what}" for usage, what in HELP_LINES),
        "",
        "Everyone can use `help`, `status` and `forget me`; the rest is for this channel's "
        "admins. Changes apply from the next message on.",
    ]
    return "\n".join(lines)


class AdminCommands:
    """Implements bots.base.Commands."""

    def __init__(
        self,
        *,
        settings: Settings,
        channels: ChannelStore,
        roles: Roles,
        audit: AuditLog,
        feedback: FeedbackStore,
        erasure: Erasure,
        model_info: ModelInfo,
        health: Health,
        knowledge_bases: KnowledgeBases | None = None,
    ) -> None:
        self._settings = settings
        self._channels = channels
        self._roles = roles
        self._audit = audit
        self._feedback = feedback
        self._erasure = erasure
        self._model_info = model_info
        self._health = health
        self._knowledge_bases = knowledge_bases

    async def run(self, call: CommandCall, platform: CommandPlatform) -> str:
        words = call.text.split()
        name = words[0].lower() if words else "help"
        try:
            return await self._dispatch(name, words[1:], call, platform)
        except Invalid as exc:
            await self._record(call, _action(name, words), "invalid", detail=_unquoted(str(exc)))
            return f":warning: {exc}\nNothing was changed. See `{call.prefix} help`."
        except Refused as exc:
            await self._record(call, _action(name, words), "refused", detail=_unquoted(str(exc)))
            return f":no_entry: {exc}"
        except RedisError:
            log.exception("admin command %r failed: Redis unreachable", name)
            return (
                ":warning: Parley cannot reach its store (Redis) right now, so nothing was "
                "changed. Try again in a minute; if it persists, tell your Parley operator."
            )
        except KnowledgeError as exc:  # the knowledge store (PostgreSQL) is down, say
            log.error("admin command %r failed: %s", name, exc)
            return (
                ":warning: Parley cannot read its knowledge bases right now, so this channel's "
                "settings are as they were. Try again in a minute; if it persists, tell your "
                "Parley operator (Parley's log and `parley doctor` say why)."
            )

    async def _dispatch(
        self, name: str, args: list[str], call: CommandCall, platform: CommandPlatform
    ) -> str:
        if name in ("help", "?"):
            return help_text(call.prefix)
        if name == "status":
            return await self._status(call, platform)
        if name == "forget" and args and args[0].lower() == "me":
            return await self._forget_me(call, args)
        handlers = {
            "enable": self._enable,
            "disable": self._enable,
            "mode": self._mode,
            "persona": self._persona,
            "set": self._set,
            "forget": self._forget_thread,
            "admins": self._admins,
            "kb": self._kb,
        }
        handler = handlers.get(name)
        if handler is None:
            return f"I don't know `{call.prefix} {name}`.\n\n{help_text(call.prefix)}"
        return await handler(name, args, call, platform)

    # -- settings ------------------------------------------------------------------------

    async def _enable(
        self, name: str, args: list[str], call: CommandCall, platform: CommandPlatform
    ) -> str:
        await self._require_admin(call, platform, name)
        _no_more(args, f"{call.prefix} {name}")
        on = name == "enable"
        old = await self._change(call, name, Field.ENABLED, "1" if on else "0")
        if on:
            return ":white_check_mark: Parley now answers in this channel." + _unchanged(old, "1")
        return (
            ":zzz: Parley no longer answers in this channel. Threads it already knows are "
            f"kept; `{call.prefix} enable` turns it back on." + _unchanged(old, "0")
        )

    async def _mode(
        self, name: str, args: list[str], call: CommandCall, platform: CommandPlatform
    ) -> str:
        await self._require_admin(call, platform, "mode")
        if len(args) != 1:
            raise Invalid(f"Write `{call.prefix} mode mentions` or `{call.prefix} mode all`.")
        try:
            mode = parse_mode(args[0].lower())
        except InvalidSetting as exc:
            raise Invalid(str(exc)) from None
        await self._change(call, f"mode {mode}", Field.MODE, mode)
        if mode == "all":
            return (
                ":speech_balloon: Parley now answers every new message in this channel, "
                "mentioned or not, and follow-ups in its threads."
            )
        return ":speech_balloon: Parley now answers only when mentioned (and in its threads)."

    async def _persona(
        self, name: str, args: list[str], call: CommandCall, platform: CommandPlatform
    ) -> str:
        await self._require_admin(call, platform, "persona")
        sub = args[0].lower() if args else ""
        if sub not in ("show", "set", "reset"):
            raise Invalid(
                f"Write `{call.prefix} persona show`, `{call.prefix} persona set <instructions>` "
                f"or `{call.prefix} persona reset`."
            )
        if sub == "show":
            config = await self._load(call)
            source = "this channel's persona" if config.persona else "the default persona"
            text = config.persona or self._settings.system_prompt
            await self._record(call, "persona show", "done")
            return f"**{source.capitalize()}:**\n```\n{text}\n```"
        if sub == "reset":
            _no_more(args[1:], f"{call.prefix} persona reset")
            await self._change(call, "persona reset", Field.PERSONA, None)
            return ":leftwards_arrow_with_hook: This channel uses the default persona again."
        # Keep the admin's own line breaks: take the raw text after "set".
        raw = call.text.strip()[len("persona") :].lstrip()[len("set") :]
        try:
            persona = parse_persona(raw)
        except InvalidSetting as exc:
            raise Invalid(str(exc)) from None
        await self._change(call, "persona set", Field.PERSONA, persona)
        return (
            f":memo: This channel's persona is set ({len(persona):,} characters). "
            "It applies from the next message on."
        )

    async def _set(
        self, name: str, args: list[str], call: CommandCall, platform: CommandPlatform
    ) -> str:
        await self._require_admin(call, platform, "set")
        usage = (
            f"Write `{call.prefix} set temperature <0-2>` or `{call.prefix} set max-tokens <n>` "
            "(or `default` instead of the value)."
        )
        if len(args) != 2:
            raise Invalid(usage)
        setting, value = args[0].lower(), args[1].lower()
        parsers: dict[str, tuple[str, Callable[[str], object]]] = {
            "temperature": (Field.TEMPERATURE, parse_temperature),
            "max-tokens": (
                Field.MAX_TOKENS,
                lambda v: parse_max_tokens(v, context_tokens=self._settings.context_tokens),
            ),
        }
        if setting not in parsers:
            raise Invalid(f"I can't set `{setting}`. {usage}")
        field, parse = parsers[setting]
        stored: str | None = None
        if value != "default":
            try:
                stored = str(parse(value))
            except InvalidSetting as exc:
                raise Invalid(str(exc)) from None
        await self._change(call, f"set {setting}", field, stored)
        shown = stored if stored is not None else f"the default ({self._default(setting)})"
        return f":gear: {setting} is now {shown} in this channel."

    def _default(self, setting: str) -> str:
        s = self._settings
        return f"{s.temperature:g}" if setting == "temperature" else str(s.max_new_tokens)

    # -- erasure -------------------------------------------------------------------------

    async def _forget_me(self, call: CommandCall, args: list[str]) -> str:
        _no_more(args[1:], f"{call.prefix} forget me")
        report = await self._erasure.forget_user(call.platform, call.tenant, call.user)
        ratings = await self._feedback.forget_user(call.platform, call.tenant, call.user)
        # The log keeps that an erasure happened, not who asked for it.
        await self._audit.record(
            platform=call.platform,
            tenant=call.tenant,
            channel=call.channel,
            actor=ERASED_USER,
            action="forget me",
            outcome="done",
        )
        return (
            f":wastebasket: Done. I erased what I kept about you: your messages and my answers "
            f"to them in {report.threads} thread(s) ({report.turns} turns), the personal data "
            f"you wrote, and {ratings} rating(s)."
        )

    async def _forget_thread(
        self, name: str, args: list[str], call: CommandCall, platform: CommandPlatform
    ) -> str:
        usage = (
            f"Write `{call.prefix} forget thread <link to a message of the thread>` (the "
            "message's menu > Copy link), or `forget me`."
        )
        if not args or args[0].lower() != "thread" or len(args) > 3:
            raise Invalid(usage)
        if len(args) >= 2:
            target = platform.parse_thread_link(args[1])
            if target is None:
                raise Invalid(f"That is not a link to a message. {usage}")
        elif call.thread is not None:
            target = (call.channel, call.thread)
        else:
            raise Invalid(usage)
        channel, thread = target
        where = CommandCall(
            platform=call.platform,
            tenant=call.tenant,
            channel=channel,
            user=call.user,
            text=call.text,
            prefix=call.prefix,
            direct=call.direct,
        )
        await self._require_admin(where, platform, "forget thread")
        key = thread_key(call.platform, call.tenant, channel, thread)
        await self._erasure.forget_thread(key)
        await self._record(where, "forget thread", "done", old=thread)
        return ":wastebasket: Done. Parley no longer remembers anything of that thread."

    # -- admins --------------------------------------------------------------------------

    async def _admins(
        self, name: str, args: list[str], call: CommandCall, platform: CommandPlatform
    ) -> str:
        await self._require_admin(call, platform, "admins")
        sub = args[0].lower() if args else "list"
        if sub not in ("list", "add", "remove"):
            raise Invalid(
                f"Write `{call.prefix} admins list`, `{call.prefix} admins add @user` or "
                f"`{call.prefix} admins remove @user`."
            )
        if sub == "list":
            _no_more(args[1:], f"{call.prefix} admins list")
            await self._record(call, "admins list", "done")
            return await self._admin_list(call, platform)
        if len(args) != 2:
            raise Invalid(f"Write `{call.prefix} admins {sub} @user`, naming one person.")
        user = await platform.resolve_user(args[1])
        if user is None:
            raise Invalid(f"I can't tell who `{args[1]}` is; mention them with @.")
        shown = platform.show_user(user)
        if sub == "add":
            added = await self._roles.add(call.platform, call.tenant, call.channel, user)
            await self._record(call, "admins add", "done", new=user)
            if not added:
                return f"{shown} already is an admin of this channel."
            return f":key: {shown} is now an admin of this channel."
        if self._roles.is_bootstrap(call.platform, user):
            raise Invalid(
                f"{shown} is an admin of every channel through PARLEY_ADMINS; your Parley "
                "operator changes that setting."
            )
        removed = await self._roles.remove(call.platform, call.tenant, call.channel, user)
        await self._record(call, "admins remove", "done", old=user)
        if not removed:
            return f"{shown} was not an admin of this channel."
        return f"{shown} is no longer an admin of this channel."

    async def _admin_list(self, call: CommandCall, platform: CommandPlatform) -> str:
        own = await self._roles.channel_admins(call.platform, call.tenant, call.channel)
        everywhere = self._roles.bootstrap_admins(call.platform)
        lines = ["**Admins of this channel**"]
        lines.append("- Channel admins: " + (", ".join(map(platform.show_user, own)) or "none yet"))
        lines.append(
            "- Admins of every channel (PARLEY_ADMINS): "
            + (", ".join(map(platform.show_user, everywhere)) or "none")
        )
        if call.platform in ("slack",) and self._settings.slack_workspace_admins:
            lines.append("- Workspace admins and owners")
        return "\n".join(lines)

    # -- knowledge bases -----------------------------------------------------------------

    async def _kb(
        self, name: str, args: list[str], call: CommandCall, platform: CommandPlatform
    ) -> str:
        await self._require_admin(call, platform, "kb")
        sub = args[0].lower() if args else "list"
        if sub not in ("list", "use", "off"):
            raise Invalid(
                f"Write `{call.prefix} kb list`, `{call.prefix} kb use <name>` or "
                f"`{call.prefix} kb off [<name>]`."
            )
        used = (await self._load(call)).knowledge_bases
        if sub == "list":
            _no_more(args[1:], f"{call.prefix} kb list")
            await self._record(call, "kb list", "done")
            return self._kb_listing(used, await self._available_kbs())
        try:
            names = tuple(
                dict.fromkeys(
                    parse_kb_name(n) for arg in args[1:] for n in arg.split(",") if n.strip()
                )
            )
        except InvalidSetting as exc:
            raise Invalid(str(exc)) from None
        if sub == "use":
            if not names:
                raise Invalid(f"Write `{call.prefix} kb use <name>`; `kb list` shows the names.")
            available = await self._available_kbs()
            unknown = [n for n in names if n not in available]
            if unknown:
                have = ", ".join(f"`{n}`" for n in available) or "none yet"
                raise Invalid(
                    f"There is no knowledge base {', '.join(f'`{n}`' for n in unknown)} "
                    f"(available: {have}). An operator loads one with "
                    "`parley ingest <folder> --kb <name>`."
                )
            new = tuple(dict.fromkeys(used + names))
        else:
            new = tuple(n for n in used if n not in names) if names else ()
        await self._change(call, f"kb {sub}", Field.KNOWLEDGE_BASES, join_kbs(new))
        if not new:
            return ":books: This channel uses no knowledge base: answers come from the model alone."
        listed = ", ".join(f"`{n}`" for n in new)
        return (
            f":books: Answers in this channel now come from {listed}, with their sources; "
            'a question they do not cover gets an honest "not covered".'
        )

    async def _available_kbs(self) -> list[str]:
        if self._knowledge_bases is None:
            return []
        return sorted(await self._knowledge_bases())

    @staticmethod
    def _kb_listing(used: tuple[str, ...], available: list[str]) -> str:
        here = ", ".join(f"`{n}`" for n in used) or "none: answers come from the model alone"
        have = (
            ", ".join(f"`{n}`" for n in available)
            or "none yet: an operator loads documents with `parley ingest <folder> --kb <name>`"
        )
        return "\n".join(
            ["**Knowledge bases**", f"- Used in this channel: {here}", f"- Available: {have}"]
        )

    # -- status --------------------------------------------------------------------------

    async def _status(self, call: CommandCall, platform: CommandPlatform) -> str:
        config = await self._load(call)
        policy = self._channels.policy(config, direct=call.direct)
        usage = await self._feedback.usage(call.platform, call.tenant, call.channel)
        role = await self._roles.role(call.platform, call.tenant, call.channel, call.user, platform)
        model, health = await asyncio.gather(self._model_line(), self._health_line())
        s = self._settings
        answers = "on" if policy.enabled else "off"
        if config.enabled is None:
            default = s.direct_messages if call.direct else s.default_channel_policy
            answers += f" (the default: {default})"
        mode = {
            "mentions": "answers when mentioned, and follow-ups in its threads",
            "all": "answers every new message in the channel",
        }[policy.mode]
        persona = (
            f"this channel's own ({len(config.persona):,} characters)"
            if config.persona
            else "the default"
        )
        return "\n".join(
            [
                "**Parley in this channel**",
                f"- Answers: {answers}",
                f"- Mode: {policy.mode}, {mode}",
                f"- Persona: {persona}",
                "- Knowledge bases: "
                + (", ".join(f"`{n}`" for n in policy.knowledge_bases) or "none"),
                f"- Temperature: {policy.params.temperature:g}"
                + ("" if config.temperature is not None else " (default)")
                + f"; max tokens: {policy.params.max_new_tokens}"
                + ("" if config.max_tokens is not None else " (default)"),
                f"- Model: {model}",
                f"- Service: {health}",
                f"- Usage: {usage.answered:,} answered, {usage.failed:,} failed, "
                f"{usage.tokens:,} tokens; rated :+1: {usage.good:,} :-1: {usage.bad:,}",
                f"- You: {role.value}",
            ]
        )

    async def _model_line(self) -> str:
        try:
            info = await asyncio.wait_for(self._model_info(), timeout=MODEL_PROBE_SECONDS)
        except Exception as exc:
            log.warning("status: model server not reachable: %r", exc)
            return ":red_circle: not reachable; answers fail politely until it is back"
        name = info.get("model_id") or "unknown model"
        return f":large_green_circle: {name}"

    async def _health_line(self) -> str:
        try:
            health = await self._health()
        except Exception as exc:
            log.warning("status: could not read worker health: %r", exc)
            return "unknown"
        workers = (
            f":large_green_circle: {health.workers} worker process(es)"
            if health.workers
            else ":red_circle: no worker running; messages wait in the queue"
        )
        queued = "" if health.queued is None else f", {health.queued} message(s) queued"
        return workers + queued

    # -- helpers -------------------------------------------------------------------------

    async def _load(self, call: CommandCall) -> Any:
        return await self._channels.load(call.platform, call.tenant, call.channel)

    async def _require_admin(self, call: CommandCall, platform: CommandPlatform, what: str) -> Role:
        role = await self._roles.role(call.platform, call.tenant, call.channel, call.user, platform)
        if role.is_admin:
            return role
        admins = await self._roles.channel_admins(call.platform, call.tenant, call.channel)
        who = ", ".join(map(platform.show_user, admins)) or "your Parley operator"
        raise Refused(
            f"Only admins of this channel can use `{call.prefix} {what}`. Ask {who}. "
            f"Everyone can use `{call.prefix} status`, `help` and `forget me`."
        )

    async def _change(
        self, call: CommandCall, action: str, field: str, value: str | None
    ) -> str | None:
        old = await self._channels.change(call.platform, call.tenant, call.channel, field, value)
        await self._record(call, action, "done", old=old, new=value)
        log.info(
            "admin %s set %s in %s:%s:%s",
            call.user,
            field,
            call.platform,
            call.tenant,
            call.channel,
        )
        return old

    async def _record(
        self,
        call: CommandCall,
        action: str,
        outcome: Outcome,
        *,
        old: str | None = None,
        new: str | None = None,
        detail: str = "",
    ) -> None:
        await self._audit.record(
            platform=call.platform,
            tenant=call.tenant,
            channel=call.channel,
            actor=call.user,
            action=action,
            outcome=outcome,
            old=old,
            new=new,
            detail=detail,
        )


def _action(name: str, words: list[str]) -> str:
    """The command as audited: its name and subcommand, never free text (a persona)."""
    sub = words[1].lower() if len(words) > 1 else ""
    if name in ("mode", "persona", "set", "forget", "admins", "kb") and _WORD.fullmatch(sub):
        return f"{name} {sub}"
    return name[:40]


def _unquoted(message: str) -> str:
    """A reply as the audit keeps it: without what was quoted back (`…`), which may be
    anything a person typed, personal data included."""
    return _QUOTED.sub("`…`", message)


def _no_more(args: list[str], usage: str) -> None:
    if args:
        raise Invalid(f"`{usage}` takes nothing more; I don't understand `{' '.join(args)}`.")


def _unchanged(old: str | None, new: str) -> str:
    return " (It already was.)" if old == new else ""
