"""Any server that speaks OpenAI's Chat Completions API: vLLM, SGLang, llama.cpp's server,
Ollama, TGI's Messages API (and OpenAI itself).

POST {base}/v1/chat/completions with "stream": true; the answer arrives as server-sent events,
one `chat.completion.chunk` per `data:` line, ended by `data: [DONE]`. The server renders the
chat template, so the backend sends messages, not a prompt.

Differences from the TGI backend worth knowing:
- `repetition_penalty` is not part of the Chat Completions API (servers disagree on its name),
  so it is not sent; the server's default applies.
- Token counts: /tokenize is not part of the API either. vLLM, llama.cpp and TGI each have
  one, with different bodies; the first count probes them once and remembers which answers.
  Elsewhere (Ollama, SGLang, OpenAI) counts are estimate_tokens(), a deliberate overestimate.
- Template overhead is unknown, so prompt_overhead_tokens() is an upper bound for the
  common templates rather than exact.

No retries here: the reply pipeline retries (llm.retry), as for TGI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp

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
from llm.sse import SSEDecoder
from llm.tgi import count_content_tokens
from llm.token_counts import TokenCounts

if TYPE_CHECKING:
    from parley.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

_MAX_ERROR_BODY = 500  # characters of a server's error message kept

# Template tokens per message and around the whole prompt, an upper bound for the templates
# these servers commonly run: Llama 3 (5 per message; BOS + assistant header 5), ChatML as in
# Qwen (5; 3), Gemma (5; 4), Mistral (at most 6; 2).
TOKENS_PER_MESSAGE = 8
TOKENS_PER_PROMPT = 8

# Text pieces that tokenizers rarely merge: each digit (Llama 2, Mistral and Gemma split
# numbers into digits), each run of letters, each other symbol.
_PIECES = re.compile(r"\d|[^\W\d_]+|[^\w\s]|_")


class OpenAIChatModel:
    """A ChatModel on one OpenAI-compatible server. Use it from one event loop; `aclose()` it
    at the end."""

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        context_tokens: int = 8192,
        generation_timeout: float = 300.0,
        token_timeout: float = 30.0,
        request_timeout: float = 10.0,
    ) -> None:
        """`base_url` is the server's root; a trailing /v1 is accepted too. `model` is sent with
        each request; without it the first model of GET /v1/models is used. `api_key` goes in
        `Authorization: Bearer`. `generation_timeout` bounds one whole stream, `token_timeout`
        the silence before the first token and between two (time queued in the server
        counts), `request_timeout` the small /v1/models and /tokenize calls."""
        self._base_url = normalize_base_url(base_url)
        self._model = model or None
        self._api_key = api_key or None
        self._context_tokens = context_tokens
        self._generation_timeout = generation_timeout
        self._token_timeout = token_timeout
        self._request_timeout = request_timeout
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._resolved_model: str | None = None
        self._dialect: _TokenizeDialect | None = None
        self._tokenize_available = True
        self._warned_estimate = False
        self._counts = TokenCounts(self._tokenize, estimate_tokens)

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAIChatModel:
        key = settings.openai_api_key
        return cls(
            settings.openai_url,
            model=settings.openai_model,
            api_key=key.get_secret_value() if key is not None else None,
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
        if n_messages < 0:
            raise ValueError(f"n_messages must be >= 0, not {n_messages}")
        return TOKENS_PER_PROMPT + n_messages * TOKENS_PER_MESSAGE

    def request_body(
        self, messages: Sequence[ChatMessage], params: GenerationParams, model: str | None
    ) -> dict[str, Any]:
        """The JSON body of the chat request."""
        body: dict[str, Any] = {
            # Servers tokenize the rendered template with special tokens enabled, so text
            # shaped like <|eot_id|> or <|im_end|> could end the user's turn: break it.
            "messages": [
                {"role": m.role, "content": llama3.neutralize(m.content)} for m in messages
            ],
            "stream": True,
            "max_tokens": params.max_new_tokens,
        }
        if model is not None:
            body["model"] = model
        if params.temperature <= 0:
            body["temperature"] = 0.0  # greedy, in every server's reading of the API
        else:
            body["temperature"] = params.temperature
            if params.top_p < 1.0:  # TGI rejects 1.0; leaving it out means the same
                body["top_p"] = params.top_p
        return body

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncGenerator[str, None]:
        """Yield the answer's text as it is generated. Raises ModelError subclasses only
        (CancelledError aside); text already yielded stays valid up to the error."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._generation_timeout
        progress = _Progress(loop, deadline, self._token_timeout, self._generation_timeout)
        model = await progress.within(self._model_name(), "the model list")
        session = self._session_for_loop()
        try:
            response = await progress.within(
                session.post(
                    f"{self._base_url}/v1/chat/completions",
                    json=self.request_body(messages, params, model),
                    headers=self._headers(),
                    # Bounded by `progress`; the session's short default is for small calls.
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._request_timeout),
                ),
                "the response",
            )
        except ModelError:
            raise
        except Exception as exc:
            raise to_model_error(exc) from exc
        finished = False
        try:
            if response.status != 200:
                text = await progress.within(response.text(errors="replace"), "the error")
                raise error_from_response(response.status, text)
            if response.content_type == "application/json":
                # A server (or proxy) that ignored "stream": true answers in one piece.
                text = await progress.within(response.text(errors="replace"), "the answer")
                content = _completion_content(text)
                finished = True
                if content:
                    yield content
                return
            async with contextlib.aclosing(self._chunks(response, progress)) as chunks:
                async for chunk in chunks:
                    yield chunk
            finished = True
        except ModelError:
            raise
        except Exception as exc:
            raise to_model_error(exc) from exc
        finally:
            if finished:
                response.release()
            else:
                response.close()  # stops the server's generation: it sees the connection go

    async def _chunks(
        self, response: aiohttp.ClientResponse, progress: _Progress
    ) -> AsyncGenerator[str, None]:
        decoder = SSEDecoder()
        finish_reason: str | None = None
        while True:
            data = await progress.within(response.content.readany(), "a token")
            try:
                events = decoder.feed(data) if data else decoder.close()
            except ValueError as exc:
                raise ModelUnavailable(f"malformed event stream ({exc})") from exc
            for event in events:
                if event.data.strip() == "[DONE]":
                    return
                payload = _json_object(event.data)
                if event.event == "error" or "error" in payload or payload.get("object") == "error":
                    raise error_from_payload(payload)
                choices = payload.get("choices")
                if not isinstance(choices, list) or not choices:
                    continue  # e.g. a final usage chunk
                choice = choices[0]
                if not isinstance(choice, Mapping):
                    raise ModelUnavailable("malformed chunk: a choice is not an object")
                delta = choice.get("delta")
                content = delta.get("content") if isinstance(delta, Mapping) else None
                if isinstance(content, str) and content:
                    progress.advance()
                    yield content
                reason = choice.get("finish_reason")
                if isinstance(reason, str):
                    finish_reason = reason
            if not data:
                if finish_reason is not None:
                    return  # ended without [DONE], but the generation said it finished
                raise ModelUnavailable("the server closed the stream before the answer finished")

    async def _model_name(self) -> str | None:
        """The configured model, else the first one the server lists (asked once)."""
        if self._model is not None:
            return self._model
        if self._resolved_model is None:
            ids = await self._list_models()
            if ids:
                self._resolved_model = ids[0]
        return self._resolved_model

    async def server_info(self) -> dict[str, Any]:
        """GET /v1/models: `model_id` is the configured model, or else the first listed.
        Raises ModelRejected when the configured model is not among those the server lists."""
        ids, entries = await self._models()
        if self._model is not None and ids and self._model not in ids:
            raise ModelRejected(
                f"PARLEY_OPENAI_MODEL={self._model!r} is not served at {self._base_url}; "
                f"it serves {', '.join(ids)}"
            )
        model_id = self._model or (ids[0] if ids else None)
        if model_id is None:
            raise ModelUnavailable(
                f"{self._base_url}/v1/models lists no model; set PARLEY_OPENAI_MODEL"
            )
        info: dict[str, Any] = {
            "model_id": model_id,
            "models": ids,
            "backend": "openai",
            "base_url": self._base_url,
        }
        max_len = entries.get(model_id, {}).get("max_model_len")  # vLLM says it
        if isinstance(max_len, int):
            info["max_total_tokens"] = max_len
        return info

    async def _list_models(self) -> list[str]:
        ids, _ = await self._models()
        return ids

    async def _models(self) -> tuple[list[str], dict[str, Mapping[str, Any]]]:
        try:
            session = self._session_for_loop()
            async with session.get(f"{self._base_url}/v1/models", headers=self._headers()) as resp:
                text = await resp.text(errors="replace")
                if resp.status != 200:
                    raise error_from_response(resp.status, text)
        except ModelError:
            raise
        except Exception as exc:
            raise to_model_error(exc) from exc
        payload = _json_object(text)
        data = payload.get("data")
        if not isinstance(data, list):
            raise ModelUnavailable("/v1/models did not answer a model list")
        entries = {
            str(entry["id"]): entry
            for entry in data
            if isinstance(entry, Mapping) and isinstance(entry.get("id"), str)
        }
        return list(entries), entries

    async def count_tokens(self, text: str) -> int:
        """Tokens `text` takes as a message's content (neutralized and stripped, as sent).

        The server's /tokenize where it has one (see the module's docstring), without the
        tokens it adds itself (BOS), which prompt_overhead_tokens() counts. Otherwise, or
        while the server is unreachable, estimate_tokens(), logged once at WARNING.
        """
        return await self._counts.count(llama3.render_content(text))

    async def _tokenize(self, content: str) -> int | None:
        if not self._tokenize_available:
            return None
        dialects = [self._dialect] if self._dialect is not None else list(_DIALECTS)
        statuses: list[str] = []
        for dialect in dialects:
            try:
                session = self._session_for_loop()
                async with session.post(
                    f"{self._base_url}/tokenize",
                    json=dialect.body(content, self._model or self._resolved_model),
                    headers=self._headers(),
                ) as resp:
                    if resp.status in (404, 405) and self._dialect is None:
                        # No /tokenize at all (Ollama, OpenAI): it will not grow one.
                        self._tokenize_available = False
                        self._warn_estimate(f"the server has no /tokenize (HTTP {resp.status})")
                        return None
                    if resp.status != 200:
                        statuses.append(f"{dialect.name}: HTTP {resp.status}")
                        continue
                    count = dialect.count(await resp.json(content_type=None))
            except (aiohttp.ClientError, TimeoutError) as exc:
                self._warn_estimate(f"/tokenize failed ({type(exc).__name__}: {exc})")
                return None
            except ValueError as exc:  # an answer of another shape: not this dialect
                statuses.append(f"{dialect.name}: {exc}")
                continue
            if count <= 0:  # text that is not empty has tokens; a wrong dialect says 0
                statuses.append(f"{dialect.name}: counted {count}")
                continue
            if self._dialect is None:
                log.info("token counts from the server's /tokenize (%s style)", dialect.name)
                self._dialect = dialect
            return count
        if self._dialect is None:
            self._tokenize_available = False
        self._warn_estimate(f"/tokenize gave no usable count ({'; '.join(statuses)})")
        return None

    def _warn_estimate(self, reason: str) -> None:
        level = logging.DEBUG if self._warned_estimate else logging.WARNING
        self._warned_estimate = True
        log.log(level, "%s; estimating token counts from the text instead", reason)

    def _headers(self) -> dict[str, str]:
        if self._api_key is None:
            return {}
        return {"Authorization": f"Bearer {self._api_key}"}

    def _session_for_loop(self) -> aiohttp.ClientSession:
        # A session is bound to the loop it was created on; a new loop gets a new one.
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
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


class _Progress:
    """The two limits of one generation: the whole of it, and the silence between tokens
    (the first token included). Only content resets the silence: a server that sends
    keep-alive comments but no tokens still times out."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        deadline: float,
        token_timeout: float,
        generation_timeout: float,
    ) -> None:
        self._loop = loop
        self._deadline = deadline
        self._token_timeout = token_timeout
        self._generation_timeout = generation_timeout
        self._last = loop.time()

    def advance(self) -> None:
        self._last = self._loop.time()

    async def within(self, awaitable: Awaitable[T], what: str) -> T:
        idle_end = self._last + self._token_timeout
        wait = max(0.0, min(idle_end, self._deadline) - self._loop.time())
        try:
            async with asyncio.timeout(wait):
                return await awaitable
        except TimeoutError as exc:
            if self._loop.time() >= self._deadline - 0.001:
                raise ModelTimeout(
                    f"generation took longer than {self._generation_timeout:g}s"
                ) from exc
            raise ModelTimeout(
                f"no token from the server within {self._token_timeout:g}s (waiting for {what})"
            ) from exc


@dataclass(frozen=True)
class _TokenizeDialect:
    name: str
    body: Callable[[str, str | None], dict[str, Any]]
    count: Callable[[object], int]


def _count_llama_cpp(answer: object) -> int:
    if isinstance(answer, Mapping) and isinstance(answer.get("tokens"), list):
        return len(answer["tokens"])
    raise ValueError("no `tokens` list")


def _count_vllm(answer: object) -> int:
    if isinstance(answer, Mapping) and isinstance(answer.get("count"), int):
        return int(answer["count"])
    raise ValueError("no `count`")


def _vllm_body(text: str, model: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"prompt": text, "add_special_tokens": False}
    if model is not None:
        body["model"] = model
    return body


# Tried in this order: llama.cpp's server answers any other body with an empty token list
# (caught by the count check), vLLM and TGI reject a body without their field.
_DIALECTS = (
    _TokenizeDialect(
        "llama.cpp", lambda text, _: {"content": text, "add_special": False}, _count_llama_cpp
    ),
    _TokenizeDialect("vLLM", _vllm_body, _count_vllm),
    _TokenizeDialect("TGI", lambda text, _: {"inputs": text}, count_content_tokens),
)


def normalize_base_url(url: str) -> str:
    """The server's root: no trailing slash, no trailing /v1 (routes are added to it)."""
    url = url.rstrip("/")
    return url.removesuffix("/v1").rstrip("/")


def estimate_tokens(text: str) -> int:
    """A deliberate overestimate for a tokenizer we cannot see: the larger of UTF-8 bytes / 3
    and 1.1 x the number of letter runs, digits and other symbols.

    Byte-level BPE tokenizers with large vocabularies (Llama 3, Qwen, Gemma, GPT-4's) average
    about 4 bytes per token in English; counting every digit and symbol covers tokenizers that
    split numbers into digits (Llama 2, Mistral, Gemma), and the 10% the spaces between them.
    Measured against Gemma 3's tokenizer: English prose and code 18-50% high, JSON 26%, hex
    12%, German and Chinese 50%; text made of numbers comes within a few percent either way
    (a sentence of phone numbers: 2% low), which the template overhead's upper bound
    (TOKENS_PER_MESSAGE) absorbs. It can fall short for scripts that a small vocabulary only
    knows byte by byte (up to 3 tokens per CJK character): the server's /tokenize is the
    remedy there.
    """
    if not text:
        return 0
    pieces = math.ceil(len(_PIECES.findall(text)) * 1.1)
    return max(math.ceil(len(text.encode("utf-8")) / 3), pieces)


def _json_object(text: str) -> dict[str, Any]:
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise ModelUnavailable(f"malformed JSON from the server: {text[:200]!r}") from exc
    if not isinstance(payload, dict):
        raise ModelUnavailable(f"the server answered JSON that is not an object: {text[:200]!r}")
    return payload


def _completion_content(text: str) -> str:
    payload = _json_object(text)
    if "error" in payload or payload.get("object") == "error":
        raise error_from_payload(payload)
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ModelUnavailable("malformed chat completion: no choices[0].message") from exc
    return content if isinstance(content, str) else ""


def _error_fields(payload: Mapping[str, Any]) -> tuple[str, str, int | None]:
    """(message, type, code) from the error shapes these servers use: OpenAI's and llama.cpp's
    {"error": {"message", "type", "code"}}, TGI's {"error": "...", "error_type"}, vLLM's older
    {"object": "error", "message", "type", "code"}, Ollama's {"error": "..."}."""
    inner = payload.get("error")
    source: Mapping[str, Any] = inner if isinstance(inner, Mapping) else payload
    message = source.get("message")
    if not isinstance(message, str):
        message = inner if isinstance(inner, str) else json.dumps(payload)
    message = message[:_MAX_ERROR_BODY]  # it ends up in logs
    kind = source.get("type", payload.get("error_type"))
    code = source.get("code")
    if isinstance(code, str) and code.isdigit():
        code = int(code)
    return message, kind if isinstance(kind, str) else "", code if isinstance(code, int) else None


_OVERLOADED_TYPES = frozenset({"overloaded", "unavailable_error", "rate_limit_exceeded"})
_REJECTED_TYPES = frozenset(
    {
        "validation",
        "invalid_request_error",
        "BadRequestError",
        "exceed_context_size_error",
        "authentication_error",
        "permission_error",
        "not_found_error",
        "NotFoundError",
    }
)


def error_from_payload(payload: Mapping[str, Any], status: int | None = None) -> ModelError:
    """The llm.base error for an error body or an error event in the stream."""
    message, kind, code = _error_fields(payload)
    detail = f"{message} ({kind})" if kind else message
    if status is not None and status != 200:
        return _from_status(status, detail)
    if kind in _OVERLOADED_TYPES or "rate_limit" in kind:
        return ModelOverloaded(f"the model server is overloaded: {detail}")
    if kind in _REJECTED_TYPES:
        return ModelRejected(f"the model server rejected the request: {detail}")
    if code is not None and code != 200:
        return _from_status(code, detail)
    return ModelUnavailable(f"the model server failed: {detail}")


def error_from_response(status: int, text: str) -> ModelError:
    """The llm.base error for an HTTP error answer (JSON error body or a proxy's page)."""
    try:
        payload = json.loads(text)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        return error_from_payload(payload, status)
    return _from_status(status, text.strip()[:200] or "no body")


def _from_status(status: int, detail: str) -> ModelError:
    if status in (429, 503):
        return ModelOverloaded(f"the model server is overloaded (HTTP {status}: {detail})")
    if status == 408:
        return ModelTimeout(f"the model server timed out (HTTP {status}: {detail})")
    if status in (401, 403):
        return ModelRejected(
            f"the model server refused the credentials (HTTP {status}: {detail}); "
            "check PARLEY_OPENAI_API_KEY"
        )
    if status == 404:
        return ModelRejected(
            f"the model server answered HTTP 404 ({detail}); check PARLEY_OPENAI_URL "
            "(the server's root) and PARLEY_OPENAI_MODEL"
        )
    if 400 <= status < 500:
        return ModelRejected(f"the model server rejected the request (HTTP {status}: {detail})")
    return ModelUnavailable(f"the model server failed (HTTP {status}: {detail})")


def to_model_error(exc: BaseException) -> ModelError:
    """Map what aiohttp raised to the llm.base error kinds."""
    if isinstance(exc, ModelError):
        return exc
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, TimeoutError):
        return ModelTimeout(f"the model server timed out ({detail})")
    if isinstance(exc, aiohttp.ClientResponseError):
        return _from_status(exc.status, detail)
    if isinstance(exc, aiohttp.ClientConnectionError):
        return ModelUnavailable(f"cannot reach the model server ({detail})")
    return ModelUnavailable(f"the model server failed ({detail})")
