"""Llama 3 Instruct served by Hugging Face Text Generation Inference (TGI).

Generation goes through the `text_generation` client's `generate_stream`, which POSTs to the
base URL with "stream": true (TGI's compat route). Three traps of that client are handled here:
its `timeout` bounds the whole stream (so the silence between tokens is bounded separately), it
rejects temperature=0 and top_p=1.0 before sending (so greedy and "no nucleus" are expressed the
way TGI wants), and it calls pydantic's deprecated `.dict()`.

No retries here: the reply pipeline retries (llm.retry), because a retry after partial text
must replace what the user already saw.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import warnings
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from text_generation import AsyncClient
from text_generation import errors as tg_errors

from llm import llama3
from llm.base import (
    ChatMessage,
    GenerationParams,
    ModelError,
    ModelOverloaded,
    ModelRejected,
    ModelTimeout,
    ModelUnavailable,
)
from llm.token_counts import TokenCounts

if TYPE_CHECKING:
    from parley.settings import Settings

log = logging.getLogger(__name__)

_WORDS = re.compile(r"\w+|[^\w\s]")


class TGIChatModel:
    """A ChatModel on one TGI server. Use it from one event loop; `aclose()` it at the end."""

    def __init__(
        self,
        base_url: str,
        *,
        context_tokens: int = 8192,
        generation_timeout: float = 300.0,
        token_timeout: float = 30.0,
        request_timeout: float = 10.0,
        include_bos: bool = True,
    ) -> None:
        """`generation_timeout` bounds one whole stream, `token_timeout` the wait for each
        token (the first included, so time queued in TGI counts), `request_timeout` the small
        /tokenize and /info calls. `include_bos=False` leaves <|begin_of_text|> out of the
        prompt text for a server that adds it when tokenizing."""
        self._base_url = base_url.rstrip("/")
        self._context_tokens = context_tokens
        self._generation_timeout = generation_timeout
        self._token_timeout = token_timeout
        self._request_timeout = request_timeout
        self._include_bos = include_bos
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._tokenize_available = True
        self._warned_estimate = False
        self._counts = TokenCounts(self._tokenize, estimate_tokens)

    @classmethod
    def from_settings(cls, settings: Settings) -> TGIChatModel:
        return cls(
            settings.tgi_url,
            context_tokens=settings.context_tokens,
            generation_timeout=settings.generation_timeout,
            token_timeout=settings.token_timeout,
        )

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def context_tokens(self) -> int:
        return self._context_tokens

    def prompt_overhead_tokens(self, n_messages: int) -> int:
        return llama3.overhead_tokens(n_messages)

    def render(self, messages: Sequence[ChatMessage]) -> str:
        """The exact prompt text sent to TGI for `messages`."""
        return llama3.render(messages, bos=self._include_bos)

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncGenerator[str, None]:
        """Yield the answer's text as it is generated. Raises ModelError subclasses only
        (CancelledError aside); text already yielded stays valid up to the error."""
        # The client types timeout as int; aiohttp takes float seconds.
        client = AsyncClient(self._base_url, timeout=self._generation_timeout)
        _quiet_client_deprecation()
        responses: AsyncGenerator[Any, None] = client.generate_stream(
            self.render(messages),
            max_new_tokens=params.max_new_tokens,
            repetition_penalty=params.repetition_penalty,
            stop_sequences=[llama3.STOP],
            **sampling_parameters(params),
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._generation_timeout
        text = StopTextFilter(llama3.STOP)
        try:
            while True:
                response = await self._next_response(responses, loop, deadline)
                if response is None:
                    raise ModelUnavailable("TGI closed the stream before the generation finished")
                if not response.token.special:
                    chunk = text.feed(response.token.text)
                    if chunk:
                        yield chunk
                if response.details is not None:  # only the last event carries details
                    tail = text.flush()
                    if tail:
                        yield tail
                    return
        finally:
            await responses.aclose()

    async def _next_response(
        self,
        responses: AsyncGenerator[Any, None],
        loop: asyncio.AbstractEventLoop,
        deadline: float,
    ) -> Any | None:
        """The next stream event within the idle and overall limits; None at end of stream."""
        wait = max(0.0, min(self._token_timeout, deadline - loop.time()))
        try:
            async with asyncio.timeout(wait):
                return await anext(responses)
        except StopAsyncIteration:
            return None
        except TimeoutError as exc:  # ours, or aiohttp's whole-request timeout
            if loop.time() >= deadline - 0.001:
                raise ModelTimeout(
                    f"generation took longer than {self._generation_timeout:g}s"
                ) from exc
            raise ModelTimeout(f"no token from TGI within {self._token_timeout:g}s") from exc
        except Exception as exc:
            raise to_model_error(exc) from exc

    async def count_tokens(self, text: str) -> int:
        """Tokens `text` takes as a message's content, as rendered (neutralized, stripped).

        Exact via TGI's /tokenize, up to merges across the content's edges. /tokenize adds
        <|begin_of_text|> for Llama 3; such added tokens cover no input characters
        (start == stop) and are not counted here, because overhead_tokens() counts BOS once for
        the whole prompt. Without /tokenize: estimate_tokens(), logged once at WARNING.
        """
        return await self._counts.count(llama3.render_content(text))

    async def _tokenize(self, content: str) -> int | None:
        if not self._tokenize_available:
            return None
        try:
            session = self._session_for_loop()
            async with session.post(f"{self._base_url}/tokenize", json={"inputs": content}) as resp:
                if resp.status in (404, 405):
                    # A server without a fast tokenizer (or not TGI): it will not grow one.
                    self._tokenize_available = False
                    self._warn_estimate(f"TGI has no /tokenize (HTTP {resp.status})")
                    return None
                if resp.status != 200:
                    self._warn_estimate(f"TGI /tokenize answered HTTP {resp.status}")
                    return None
                return count_content_tokens(await resp.json())
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self._warn_estimate(f"TGI /tokenize failed ({type(exc).__name__}: {exc})")
            return None

    def _warn_estimate(self, reason: str) -> None:
        level = logging.DEBUG if self._warned_estimate else logging.WARNING
        self._warned_estimate = True
        log.log(level, "%s; estimating token counts from text length instead", reason)

    async def server_info(self) -> dict[str, Any]:
        """TGI's GET /info (model_id, max_input_tokens, max_total_tokens, ...)."""
        try:
            session = self._session_for_loop()
            async with session.get(f"{self._base_url}/info") as resp:
                if resp.status != 200:
                    raise ModelUnavailable(f"TGI /info answered HTTP {resp.status}")
                info = await resp.json()
        except ModelError:
            raise
        except Exception as exc:
            raise to_model_error(exc) from exc
        if not isinstance(info, dict):
            raise ModelUnavailable("TGI /info did not answer a JSON object")
        return info

    def _session_for_loop(self) -> aiohttp.ClientSession:
        # One pooled session for the small calls; a session is bound to the loop it was
        # created on, so a model used from a new loop gets a new one.
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            if self._session is not None and not self._session.closed:
                log.debug("TGIChatModel used from a new event loop; opening a new session")
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self._request_timeout)
            )
            self._session_loop = loop
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is None or session.closed:
            return
        if self._session_loop is asyncio.get_running_loop():
            await session.close()


def create_model(settings: Settings) -> TGIChatModel:
    return TGIChatModel.from_settings(settings)


def sampling_parameters(params: GenerationParams) -> dict[str, Any]:
    """Sampling arguments for the client: temperature 0 means greedy (do_sample false, no
    temperature, since TGI and the client reject 0), top_p 1.0 means no nucleus filtering
    (sent as None, since both reject 1.0)."""
    if params.temperature <= 0:
        return {"do_sample": False, "temperature": None, "top_p": None}
    top_p = params.top_p if params.top_p < 1.0 else None
    return {"do_sample": True, "temperature": params.temperature, "top_p": top_p}


class StopTextFilter:
    """Passes text through but never the stop sequence, nor what follows it.

    TGI reports <|eot_id|> as a special token, which is skipped anyway; this covers a stop
    sequence that arrives as plain text split over several tokens. A tail that could be the
    start of the stop text is held back until the next token tells.
    """

    def __init__(self, stop: str) -> None:
        self._stop = stop
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        if self.stopped:
            return ""
        buffer = self._held + text
        index = buffer.find(self._stop)
        if index >= 0:
            self.stopped = True
            self._held = ""
            return buffer[:index]
        keep = _prefix_overlap(buffer, self._stop)
        self._held = buffer[len(buffer) - keep :]
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """What was held back, once the stream ended without completing the stop text."""
        held, self._held = self._held, ""
        return "" if self.stopped else held


def _prefix_overlap(text: str, stop: str) -> int:
    """Length of the longest end of `text` that is a proper start of `stop`."""
    for size in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:size]):
            return size
    return 0


def to_model_error(exc: BaseException) -> ModelError:
    """Map what the TGI client or aiohttp raised to the llm.base error kinds."""
    if isinstance(exc, ModelError):
        return exc
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, TimeoutError):  # includes aiohttp's ServerTimeoutError
        return ModelTimeout(f"TGI timed out ({detail})")
    if isinstance(exc, tg_errors.OverloadedError | tg_errors.RateLimitExceededError):
        return ModelOverloaded(f"TGI is overloaded ({detail})")
    if isinstance(exc, tg_errors.ValidationError | tg_errors.BadRequestError):
        return ModelRejected(f"TGI rejected the request ({detail})")
    if isinstance(
        exc,
        tg_errors.GenerationError
        | tg_errors.IncompleteGenerationError
        | tg_errors.ShardNotReadyError
        | tg_errors.ShardTimeoutError,
    ):
        return ModelUnavailable(f"TGI failed ({detail})")
    if isinstance(exc, tg_errors.NotFoundError):
        return ModelUnavailable(f"TGI answered 404; is TGI_URL right? ({detail})")
    if isinstance(exc, aiohttp.ClientResponseError):  # e.g. a proxy's non-JSON error page
        return _from_status(exc.status, detail)
    if isinstance(exc, aiohttp.ClientConnectionError):
        return ModelUnavailable(f"cannot reach TGI ({detail})")
    # UnknownError (a 5xx without a TGI error type), malformed events, payload errors.
    return ModelUnavailable(f"TGI failed ({detail})")


def _from_status(status: int, detail: str) -> ModelError:
    if status == 429:
        return ModelOverloaded(f"TGI is overloaded ({detail})")
    if status == 408:
        return ModelTimeout(f"TGI timed out ({detail})")
    if 400 <= status < 500 and status != 404:
        return ModelRejected(f"TGI rejected the request ({detail})")
    return ModelUnavailable(f"TGI failed ({detail})")


def count_content_tokens(tokens: object) -> int:
    """Count a /tokenize answer's tokens that cover input text (start < stop), leaving out
    those the tokenizer adds, such as <|begin_of_text|>. Raises ValueError on another shape."""
    if not isinstance(tokens, list):
        raise ValueError("/tokenize did not answer a list")
    count = 0
    for token in tokens:
        if not isinstance(token, Mapping):
            raise ValueError("/tokenize answered a list of something other than tokens")
        start, stop = token.get("start"), token.get("stop")
        if not isinstance(start, int) or not isinstance(stop, int):
            raise ValueError("/tokenize token without start/stop offsets")
        count += stop > start
    return count


def estimate_tokens(text: str) -> int:
    """A deliberately high guess: the larger of UTF-8 bytes / 3 and the number of words and
    punctuation marks. Llama 3 averages about 4 bytes per token in English; the second term
    covers text of short words and symbols, the first digits and CJK."""
    if not text:
        return 0
    return max(math.ceil(len(text.encode("utf-8")) / 3), len(_WORDS.findall(text)))


def context_warning(
    info: Mapping[str, Any], *, context_tokens: int, max_new_tokens: int
) -> str | None:
    """A message for the operator when our budget exceeds what the server accepts, else None.
    Without it, long conversations fail at TGI's validation (HTTP 422) instead of being trimmed.
    """
    problems = []
    max_total = info.get("max_total_tokens")
    if isinstance(max_total, int) and context_tokens > max_total:
        problems.append(
            f"PARLEY_CONTEXT_TOKENS={context_tokens} exceeds TGI's max_total_tokens={max_total}"
        )
    # Named max_input_length before TGI 2.1.
    max_input = info.get("max_input_tokens", info.get("max_input_length"))
    if isinstance(max_input, int) and context_tokens - max_new_tokens > max_input:
        problems.append(
            f"prompts of up to {context_tokens - max_new_tokens} tokens "
            f"(PARLEY_CONTEXT_TOKENS - PARLEY_MAX_NEW_TOKENS) exceed TGI's "
            f"max_input_tokens={max_input}"
        )
    if not problems:
        return None
    return (
        "; ".join(problems)
        + ". Lower PARLEY_CONTEXT_TOKENS or start TGI with larger --max-total-tokens / "
        "--max-input-tokens, or long conversations will be rejected."
    )


_CLIENT_DEPRECATION = (
    "ignore",
    re.compile(r"The `dict` method is deprecated", re.I),
    DeprecationWarning,
    re.compile(r"text_generation\.client"),
    0,
)


def _quiet_client_deprecation() -> None:
    """Silence the PydanticDeprecatedSince20 (a DeprecationWarning) that text_generation 0.7's
    `request.dict()` raises, and only that. `warnings.catch_warnings()` would be wrong here: it
    swaps process-wide state and the warning fires inside the client's generator, across awaits
    of other tasks. A narrow filter moved to the front is idempotent; re-adding it on each call
    keeps it effective when a test harness reset the filters in between."""
    if not warnings.filters or warnings.filters[0] != _CLIENT_DEPRECATION:
        warnings.filterwarnings(
            "ignore",
            message=r"The `dict` method is deprecated",
            category=DeprecationWarning,
            module=r"text_generation\.client",
        )
