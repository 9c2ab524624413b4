"""Answering one message, as plain async functions over injected dependencies.

    claim (lease) -> wait for the thread's turn -> open the reply (progress shows at once)
    -> budget the prompt from memory -> generate with bounded retries, streaming into the
    reply -> finish the reply -> record memory and "answered" in one transaction.

Every path ends with the reply finished or failed politely: never silence, never a stuck
placeholder. Message text is never logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from redis.asyncio import Redis

from admin.channels import ChannelPolicy, ChannelStore
from admin.feedback import FeedbackStore
from bots.base import DeliveryError, Outbound, Reply, ReplyState
from guardrails.injection import InjectionFinding, detect_injection
from guardrails.limits import RateLimiter, check_size
from guardrails.output import sanitize_answer
from guardrails.policy import harden_system_prompt, refusal_message
from knowledge.base import KnowledgeMisconfigured, Retriever
from llm.base import (
    ChatMessage,
    ChatModel,
    ModelError,
    ModelOverloaded,
    ModelRejected,
    ModelTimeout,
)
from llm.budget import fit_history
from llm.retry import RetryPolicy
from parley import metrics
from parley.logs import correlated
from parley.message import InboundMessage
from privacy.recognizers import redact_secrets
from privacy.redactor import Redactor, restore_text
from workers import keys
from workers.grounding import Grounding, is_not_covered, not_covered_message, retrieval_query
from workers.ledger import ReplyLedger
from workers.memory import ThreadMemory, Turn
from workers.ordering import ThreadOrder

log = logging.getLogger(__name__)

# Appended to every system prompt, the admin's own included, so placeholders survive.
PLACEHOLDER_NOTE = (
    "Personal data in this conversation has been replaced by placeholders such as <PERSON_1> "
    "or <EMAIL_ADDRESS_1>. Use a placeholder exactly as written when you refer to that value; "
    "never guess or invent the value behind it."
)


def system_message(
    system_prompt: str, grounding: Grounding | None, finding: InjectionFinding | None = None
) -> str:
    """The system message a question is answered with: the channel's prompt, the note on
    placeholders, the passages of a grounded answer, hardened against a detected injection."""
    passages = f"\n\n{grounding.system_block()}" if grounding else ""
    return harden_system_prompt(f"{system_prompt}\n\n{PLACEHOLDER_NOTE}{passages}", finding)


Display = Callable[[str, bool], str]  # (model text, still streaming) -> what people see
# Seconds between two renderings of a growing answer for display (sanitized, values put
# back); until the answer shows something, every token is rendered.
RENDER_INTERVAL = 0.25


class Outcome(Enum):
    ANSWERED = "answered"
    FAILED = "failed"  # the user got a polite failure message
    DUPLICATE = "duplicate"  # another run already finished this message
    UNDELIVERABLE = "undeliverable"  # the platform refused the reply
    NOT_COVERED = "not_covered"  # the channel's documents do not answer it: said so
    DISABLED = "disabled"  # told that Parley is off in this channel
    SKIPPED = "skipped"  # not written to Parley, in a channel where it is off


MSG_MODEL_DOWN = (
    ":warning: Sorry, I couldn't answer: the language model is not reachable right now. "
    "Please try again in a few minutes. If this keeps happening, tell your Parley admin."
)
MSG_MODEL_BUSY = (
    ":hourglass: Sorry, I couldn't answer: the language model is overloaded right now. "
    "Please try again in a minute."
)
MSG_MODEL_SLOW = (
    ":hourglass: Sorry, the language model took too long to answer. Please try again, "
    "perhaps with a shorter question."
)
MSG_REJECTED = (
    ":warning: Sorry, the language model could not process this message. "
    "Try rephrasing or shortening it."
)
MSG_CHANNEL_OFF = (
    ":zzz: Parley is turned off in this channel. An admin of this channel can turn it back "
    "on with Parley's `enable` command; see its `help` command."
)
MSG_DIRECT_OFF = (
    ":zzz: Parley does not answer direct messages in this workspace. Please ask in a channel "
    "where it is enabled."
)
MSG_KNOWLEDGE_DOWN = (
    ":warning: Sorry, I couldn't search this channel's documents right now, and I only "
    "answer from them here. Please try again in a few minutes; if this keeps happening, "
    "tell your Parley admin."
)
MSG_KNOWLEDGE_SETUP = (
    ":warning: Sorry, I answer from this channel's documents here, and they can't be "
    "searched until your Parley admin fixes how they are set up (`parley doctor` tells them "
    "what is wrong). Please tell your Parley admin."
)
MSG_NO_ROOM_FOR_PASSAGE = (
    ":scissors: Your question leaves no room for the documents I answer from here. Please "
    "ask it in fewer words."
)
MSG_INTERNAL = (
    ":warning: Sorry, something went wrong on my side while answering. "
    "Please try again; if it persists, tell your Parley admin."
)


# A passage cut to fit the context keeps at least this many tokens (less answers nothing),
# and is cut this many tokens below the estimate, in at most this many tries.
MIN_PASSAGE_TOKENS = 64
PASSAGE_CUT_MARGIN = 16
PASSAGE_CUT_TRIES = 3


def msg_too_long(tokens: int, limit: int) -> str:
    return (
        f":scissors: Your message is too long for me to read: about {tokens:,} tokens, and I "
        f"can take at most {max(limit, 0):,}. Please shorten it or split it into parts."
    )


class TryLater(Exception):
    """The platform is unreachable for now; the task should run again later. The reply
    state is kept, so the next run takes over the same reply."""


class AnswerFailed(Exception):
    """Generation cannot succeed; `user_message` is what the thread is told."""

    def __init__(self, user_message: str, reason: str) -> None:
        super().__init__(reason)
        self.user_message = user_message


@dataclass
class Pipeline:
    redis: Redis
    model: ChatModel
    outbound: Callable[[str], Outbound]
    memory: ThreadMemory
    order: ThreadOrder
    ledger: ReplyLedger
    channels: ChannelStore
    feedback: FeedbackStore
    retry: RetryPolicy
    redactor: Redactor
    restore_personal_data: bool
    user_index_ttl: int
    limiter: RateLimiter
    max_message_chars: int
    injection_action: str  # "flag" or "refuse"
    retriever: Retriever | None = None  # None: no knowledge package in this worker
    knowledge_top_k: int = 3
    knowledge_min_score: float = 0.5
    knowledge_handoff: str = ""
    _model_id: str | None = field(default=None, init=False)

    async def answer(self, message: InboundMessage) -> Outcome:
        with correlated(message.message_key):
            return await self._answer_in_turn(message)

    async def _answer_in_turn(self, message: InboundMessage) -> Outcome:
        key = message.message_key
        if (await self.ledger.load(key)).finished:
            return Outcome.DUPLICATE
        await self.order.wait_turn(message.thread_key, key)
        async with self.ledger.lease(key) as holder:
            if not holder:
                return Outcome.DUPLICATE
            entry = await self.ledger.load(key)
            outcome = Outcome.DUPLICATE
            if not entry.finished:
                # TryLater propagates without giving up the thread's turn: the retried task
                # is still the next one answered in its thread.
                outcome = await self._answer(message, entry.reply_state)
            await self.order.release(message.thread_key, key)
            return outcome

    async def _answer(self, message: InboundMessage, resume: ReplyState | None) -> Outcome:
        started = time.monotonic()
        key = message.message_key
        metrics.QUEUE_WAIT.observe(max(0.0, time.time() - message.received_at))
        # Read for every message: an admin's change applies from the next one on.
        policy = await self.channels.resolve(
            message.platform, message.tenant, message.channel, direct=message.direct
        )
        if not policy.enabled and not message.addressed:
            await self._mark_finished(message, Outcome.SKIPPED)
            return Outcome.SKIPPED

        async def save_state(state: ReplyState) -> None:
            await self.ledger.save_reply_state(key, state)

        try:
            reply = await self.outbound(message.platform).open_reply(
                message.reply_to, resume, save_state
            )
        except DeliveryError as exc:
            return await self._undeliverable(message, exc)
        if not policy.enabled:
            return await self._tell_disabled(message, reply)
        try:
            refusal = check_size(message.text, self.max_message_chars) or await self.limiter.check(
                message.platform, message.tenant, message.channel, message.user
            )
            if refusal is not None:
                raise AnswerFailed(refusal.message, refusal.reason)
            redaction = await self.redactor.redact(
                message.thread_key, message.text, user=message.user
            )
            for entity, count in redaction.counts.items():
                metrics.REDACTIONS.labels(entity).inc(count)
            if redaction.counts:
                log.info(
                    "message %s: redacted %s",
                    key,
                    redaction.counts,
                    extra={"message_key": key, "redacted": redaction.counts},
                )
            finding = self._screen_injection(key, redaction.text)
            show = await self._display(message.thread_key, policy)
            history = await self.memory.load(message.thread_key)
            grounding = await self._ground(key, redaction.text, history, policy)
            if grounding is not None and not grounding.covered:
                user_tokens = await self.model.count_tokens(redaction.text)
                outcome, text, shown = self._not_covered(key, grounding, decided_by="retrieval")
            else:
                user_tokens, prompt, grounding = await self._prompt(
                    redaction.text, history, policy, grounding, finding=finding
                )
                text = await self._generate(
                    prompt, reply, show, policy, grounded=grounding is not None
                )
                outcome, text, shown = self._settle(key, text, show, grounding)
        except AnswerFailed as failure:
            log.warning("message %s: %s", key, failure)
            return await self._fail(message, reply, failure.user_message)
        except DeliveryError as exc:
            return await self._undeliverable(message, exc)
        except Exception as exc:
            metrics.ERRORS.labels(metrics.error_kind(exc)).inc()
            log.exception("message %s: unexpected error while answering", key)
            return await self._fail(message, reply, MSG_INTERNAL)
        try:
            await reply.finish(shown)
        except DeliveryError as exc:
            return await self._undeliverable(message, exc)
        answer_tokens = await self.model.count_tokens(text)
        model_id = await self._model_name()
        user_threads = keys.user_threads(message.platform, message.tenant, message.user)
        async with self.redis.pipeline(transaction=True) as pipe:
            # Memory keeps what the model saw and said: placeholders, never the values.
            self.memory.stage_append(
                pipe,
                message.thread_key,
                [
                    Turn("user", redaction.text, user_tokens, key, user=message.user),
                    Turn("assistant", text, answer_tokens, key, model=model_id),
                ],
            )
            pipe.sadd(user_threads, message.thread_key)
            pipe.expire(user_threads, self.user_index_ttl)
            self.ledger.stage_finished(pipe, key, outcome.value)
            self.feedback.stage_answer(
                pipe,
                platform=message.platform,
                tenant=message.tenant,
                channel=message.channel,
                message_ids=reply.message_ids,
                message_key=key,
                model=model_id,
            )
            self.feedback.stage_outcome(
                pipe,
                message.platform,
                message.tenant,
                message.channel,
                outcome.value,
                answer_tokens,
            )
            await pipe.execute()
        metrics.ANSWERS.labels(message.platform, outcome.value).inc()
        metrics.TOKENS.labels(message.platform, message.channel).inc(answer_tokens)
        answer_s = time.monotonic() - started
        queued_s = max(0.0, time.time() - message.received_at - answer_s)
        log.info(
            "message %s answered in %.2fs (queued %.2fs)",
            key,
            answer_s,
            queued_s,
            extra={
                "message_key": key,
                "thread_key": message.thread_key,
                "outcome": outcome.value,
                "answer_seconds": round(answer_s, 3),
                "queued_seconds": round(queued_s, 3),
                "answer_tokens": answer_tokens,
            },
        )
        return outcome

    async def _ground(
        self, key: str, question: str, history: list[Turn], policy: ChannelPolicy
    ) -> Grounding | None:
        """The passages of the channel's knowledge bases that answer the question (none:
        not covered); None when the channel uses no knowledge base."""
        if not policy.knowledge_bases:
            return None
        if self.retriever is None:
            raise AnswerFailed(MSG_KNOWLEDGE_SETUP, "knowledge bases are unavailable here")
        earlier = [turn.content for turn in history if turn.role == "user"]
        query = retrieval_query(question, earlier)
        try:
            found = await self.retriever.search(query, policy.knowledge_bases, self.knowledge_top_k)
        except KnowledgeMisconfigured as exc:
            metrics.ERRORS.labels(metrics.error_kind(exc)).inc()
            log.error("message %s: the channel's knowledge bases cannot be searched: %s", key, exc)
            raise AnswerFailed(MSG_KNOWLEDGE_SETUP, f"knowledge setup: {exc}") from exc
        except Exception as exc:
            metrics.ERRORS.labels(metrics.error_kind(exc)).inc()
            log.exception("message %s: retrieval failed", key)
            raise AnswerFailed(MSG_KNOWLEDGE_DOWN, f"retrieval failed: {exc!r}") from exc
        passages = tuple(p for p in found if p.score >= self.knowledge_min_score)
        log.info(
            "message %s: %d of %d passages above %.2f",
            key,
            len(passages),
            len(found),
            self.knowledge_min_score,
            extra={"message_key": key, "scores": [round(p.score, 3) for p in found]},
        )
        return Grounding(policy.knowledge_bases, passages)

    def _settle(
        self, key: str, text: str, show: Display, grounding: Grounding | None
    ) -> tuple[Outcome, str, str]:
        """The outcome of a generated answer, the text memory keeps and what the thread
        shows: a grounded answer ends with its sources, unless the model said the passages
        do not answer the question."""
        if grounding is None:
            return Outcome.ANSWERED, text, show(text, False)
        if is_not_covered(text):
            return self._not_covered(key, grounding, decided_by="model")
        return Outcome.ANSWERED, text, show(text, False) + grounding.sources(text)

    def _not_covered(
        self, key: str, grounding: Grounding, *, decided_by: str
    ) -> tuple[Outcome, str, str]:
        """The honest "not covered", whether retrieval found nothing relevant or the model
        found no answer in what it was given. Memory keeps this text, never the model's
        bare marker, so a follow-up question reads a real turn."""
        log.info(
            "message %s: not covered by the documents (decided by %s)",
            key,
            decided_by,
            extra={"message_key": key, "not_covered_by": decided_by},
        )
        text = not_covered_message(grounding.kbs, self.knowledge_handoff)
        return Outcome.NOT_COVERED, text, text

    async def _model_name(self) -> str:
        """The model's id as its server reports it, asked once (ratings are kept with it)."""
        if self._model_id is None:
            try:
                info = await asyncio.wait_for(self.model.server_info(), timeout=2)
                self._model_id = str(info.get("model_id") or "unknown")
            except Exception as exc:  # not worth failing an answer over; ask again next time
                log.warning("could not read the model's id: %r", exc)
                return "unknown"
        return self._model_id

    def _screen_injection(self, key: str, text: str) -> InjectionFinding | None:
        """A finding means the prompt is hardened; raises AnswerFailed to refuse instead."""
        finding = detect_injection(text)
        if finding is not None:
            log.warning(
                "message %s: possible prompt injection (%s), action %s",
                key,
                finding.rule,
                self.injection_action,
            )
            if self.injection_action == "refuse":
                raise AnswerFailed(refusal_message(finding), f"prompt injection ({finding.rule})")
        return finding

    async def _display(self, thread_key: str, policy: ChannelPolicy) -> Display:
        """How model text is shown: no mass pings, secrets or system prompt; people's own
        values put back."""
        values = await self.redactor.restorable(thread_key) if self.restore_personal_data else {}

        def show(text: str, partial: bool) -> str:
            # partial: each streamed view is a prefix of the final one, so a streamed
            # reply never has to be rewritten because of sanitizing.
            safe = sanitize_answer(
                text,
                system_prompt=f"{policy.system_prompt}\n\n{PLACEHOLDER_NOTE}",
                redact_secrets=redact_secrets,
                partial=partial,
            )
            return restore_text(safe, values, partial=partial)

        return show

    async def _prompt(
        self,
        text: str,
        history: list[Turn],
        policy: ChannelPolicy,
        grounding: Grounding | None,
        *,
        finding: InjectionFinding | None = None,
    ) -> tuple[int, list[ChatMessage], Grounding | None]:
        """System prompt (with the passages) + as much recent history as fits + the new
        (redacted) message. The system prompt and the message are never cut; passages are
        dropped before history, least relevant first, down to the best one, which is cut
        when it alone does not fit."""
        max_new_tokens = policy.params.max_new_tokens
        user_tokens = await self.model.count_tokens(text)
        per_message = self.model.prompt_overhead_tokens(1) - self.model.prompt_overhead_tokens(0)
        history_tokens = sum(turn.tokens + per_message for turn in history)

        async def fit(grounding: Grounding | None) -> tuple[str, int, int]:
            """(system prompt, tokens that cannot be cut, tokens left for history)."""
            system_prompt = system_message(policy.system_prompt, grounding, finding)
            system_tokens = await self.model.count_tokens(system_prompt)
            fixed = system_tokens + user_tokens + self.model.prompt_overhead_tokens(2)
            return system_prompt, fixed, self.model.context_tokens - max_new_tokens - fixed

        system_prompt, fixed, available = await fit(grounding)
        while grounding is not None and len(grounding.passages) > 1 and available < history_tokens:
            grounding = grounding.without_last()
            system_prompt, fixed, available = await fit(grounding)
        # The best passage alone is too long (large chunks, a small context): the part of it
        # that fits. Token counts are not proportional to characters, hence a few tries.
        for _ in range(PASSAGE_CUT_TRIES):
            if available >= 0 or grounding is None or not grounding.passages:
                break
            passage = grounding.passages[0].text
            passage_tokens = await self.model.count_tokens(passage)
            fits = passage_tokens + available - PASSAGE_CUT_MARGIN
            if fits < MIN_PASSAGE_TOKENS:
                break
            grounding = grounding.best_cut(len(passage) * fits // passage_tokens)
            system_prompt, fixed, available = await fit(grounding)
        if available < 0:
            if grounding is not None and grounding.passages:
                # Not even a useful part of a passage fits: blame the question only when it
                # is too long without any passage.
                available = (await fit(None))[2]
                if available >= 0:
                    log.warning(
                        "no room for a passage beside a question of %d tokens: the context "
                        "holds %d, the answer takes %d (PARLEY_CONTEXT_TOKENS, "
                        "PARLEY_MAX_NEW_TOKENS) and the system prompt the rest",
                        user_tokens,
                        self.model.context_tokens,
                        max_new_tokens,
                    )
                    raise AnswerFailed(MSG_NO_ROOM_FOR_PASSAGE, "no room for a passage")
            limit = user_tokens + available
            raise AnswerFailed(msg_too_long(user_tokens, limit), "message exceeds the context")
        keep = fit_history(
            context_tokens=self.model.context_tokens,
            max_new_tokens=max_new_tokens,
            fixed_tokens=fixed,
            history_token_counts=[turn.tokens + per_message for turn in history],
        )
        kept = history[len(history) - keep :] if keep else []
        messages = [
            ChatMessage("system", system_prompt),
            *(ChatMessage(turn.role, turn.content) for turn in kept),
            ChatMessage("user", text),
        ]
        return user_tokens, messages, grounding

    async def _generate(
        self,
        prompt: list[ChatMessage],
        reply: Reply,
        show: Display,
        policy: ChannelPolicy,
        *,
        grounded: bool = False,
    ) -> str:
        """Stream the answer into the reply; retry transient model errors with backoff.

        A retry starts the text over; the reply replaces what it showed. A grounded answer
        shows nothing while it could still be the "not covered" marker (a few tokens).
        """
        attempt = 0
        started = time.monotonic()
        first_token = True
        metrics.IN_FLIGHT.inc()
        try:
            while True:
                text = shown = ""
                rendered_at = -RENDER_INTERVAL
                try:
                    async for chunk in self.model.stream(prompt, policy.params):
                        if first_token:
                            metrics.TIME_TO_FIRST_TOKEN.observe(time.monotonic() - started)
                            first_token = False
                        text += chunk
                        if grounded and is_not_covered(text, partial=True):
                            continue
                        # Rendering costs the whole text each time: per token that is
                        # quadratic in the answer, and the reply writes once per interval.
                        if not shown or time.monotonic() - rendered_at >= RENDER_INTERVAL:
                            rendered_at, shown = time.monotonic(), show(text, True)
                            await reply.update(shown)
                    if text.strip():
                        metrics.MODEL_UP.set(1)
                        return text
                    raise AnswerFailed(MSG_REJECTED, "the model returned an empty answer")
                except ModelError as exc:
                    attempt += 1
                    await self._after_model_error(exc, attempt)
        finally:
            metrics.IN_FLIGHT.dec()
            metrics.GENERATION.observe(time.monotonic() - started)

    async def _after_model_error(self, exc: ModelError, attempt: int) -> None:
        """Wait before the next attempt, or raise AnswerFailed when there is none."""
        metrics.ERRORS.labels(metrics.error_kind(exc)).inc()
        if not self.retry.should_retry(exc, attempt):
            if not isinstance(exc, ModelRejected):
                metrics.MODEL_UP.set(0)
            raise AnswerFailed(_failure_message(exc), repr(exc)) from exc
        delay = self.retry.delay(attempt)
        log.info("model error %r, retry %d in %.2fs", exc, attempt, delay)
        await asyncio.sleep(delay)

    async def _fail(self, message: InboundMessage, reply: Reply, text: str) -> Outcome:
        try:
            await reply.fail(text)
        except DeliveryError as exc:
            return await self._undeliverable(message, exc)
        await self._mark_finished(message, Outcome.FAILED)
        return Outcome.FAILED

    async def _tell_disabled(self, message: InboundMessage, reply: Reply) -> Outcome:
        try:
            await reply.finish(MSG_DIRECT_OFF if message.direct else MSG_CHANNEL_OFF)
        except DeliveryError as exc:
            return await self._undeliverable(message, exc)
        await self._mark_finished(message, Outcome.DISABLED)
        return Outcome.DISABLED

    async def _undeliverable(self, message: InboundMessage, exc: DeliveryError) -> Outcome:
        metrics.ERRORS.labels(metrics.error_kind(exc)).inc()
        if exc.retryable:
            raise TryLater(str(exc)) from exc
        log.error("message %s: the platform refused the reply: %s", message.message_key, exc)
        await self._mark_finished(message, Outcome.UNDELIVERABLE)
        return Outcome.UNDELIVERABLE

    async def _mark_finished(self, message: InboundMessage, outcome: Outcome) -> None:
        metrics.ANSWERS.labels(message.platform, outcome.value).inc()
        async with self.redis.pipeline(transaction=True) as pipe:
            self.ledger.stage_finished(pipe, message.message_key, outcome.value)
            if outcome is Outcome.FAILED:
                self.feedback.stage_outcome(
                    pipe, message.platform, message.tenant, message.channel, outcome.value
                )
            await pipe.execute()
        log.info(
            "message %s finished: %s",
            message.message_key,
            outcome.value,
            extra={"message_key": message.message_key, "outcome": outcome.value},
        )


def _failure_message(exc: ModelError) -> str:
    if isinstance(exc, ModelRejected):
        return MSG_REJECTED
    if isinstance(exc, ModelOverloaded):
        return MSG_MODEL_BUSY
    if isinstance(exc, ModelTimeout):
        return MSG_MODEL_SLOW
    return MSG_MODEL_DOWN
