"""A fake Hugging Face Text Generation Inference (TGI) server serving "Llama 3 8B Instruct".

It speaks TGI's wire format over real HTTP on loopback, in its own thread (BackgroundServer):
POST /generate, /generate_stream, / (compat: "stream" picks), /tokenize, /v1/chat/completions;
GET /info, /health, /v1/models. Answers come from `responder(prompt)`; tokens are word-ish
pieces of the answer that concatenate to it exactly, then a special <|eot_id|>.

As in TGI, errors of a streaming request (validation, overloaded) arrive as an SSE event
`data:{"error":...,"error_type":...}` with HTTP 200; the non-streaming routes answer 422/429.
`fail_next("429" | "500" | "422" | "503")` answers that HTTP status instead (as TGI's
non-streaming routes or a proxy in front would), on any generation route; "midstream" and
"stall" break a stream after `tokens_before_failure` tokens, /v1/chat/completions included.

OpenAI-compatible clients: with `api_key` set, the /v1 routes answer 401 (OpenAI's error shape)
unless `Authorization: Bearer <api_key>` is sent; `sse_variety` makes the chat stream use what
other servers legitimately send: comment lines, an event's JSON over several `data:` lines
and CRLF line ends.

Knobs (`ttft`, `token_interval`, `responder`, `max_batch`, `tokenize_enabled`, `api_key`,
`sse_variety`) may be changed
from the test thread while it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from aiohttp import web

from tests.fakes.server import BackgroundServer

MODEL_ID = "meta-llama/Meta-Llama-3-8B-Instruct"
EOT = "<|eot_id|>"
SPECIAL_IDS = {
    "<|begin_of_text|>": 128000,
    "<|end_of_text|>": 128001,
    "<|start_header_id|>": 128006,
    "<|end_header_id|>": 128007,
    "<|eot_id|>": 128009,
}
BOS_ID = SPECIAL_IDS["<|begin_of_text|>"]
EOT_ID = SPECIAL_IDS[EOT]

FailureKind = Literal["429", "500", "422", "503", "midstream", "stall"]
GENERATION_PATHS = frozenset({"/", "/generate", "/generate_stream", "/v1/chat/completions"})

_TOKEN = re.compile(r"<\|[A-Za-z0-9_]+\|>|\w+|[^\w\s]")
_PIECE = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")
_LAST_USER = re.compile(
    r"<\|start_header_id\|>user<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>", re.DOTALL
)
_STALL_LIMIT = 120.0  # seconds a stalled stream waits for the client to give up


@dataclass(frozen=True)
class RecordedRequest:
    index: int  # position in FakeTGI.requests
    method: str
    path: str
    body: Any  # the parsed JSON body; None for GET or a body that is not JSON
    received: float  # time.monotonic()
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FirstToken:
    index: int  # the request's index in FakeTGI.requests
    monotonic: float  # time.monotonic() when its first token was written
    wall: float  # time.time(), comparable across processes


class _Rejection(Exception):
    def __init__(self, status: int, error: str, error_type: str) -> None:
        super().__init__(error)
        self.status = status
        self.body = {"error": error, "error_type": error_type}


@dataclass(frozen=True)
class _Generation:
    prompt: str
    input_length: int
    max_new_tokens: int
    stop: list[str]
    details: bool
    do_sample: bool
    seed: int | None
    return_full_text: bool


def fake_tokenize(text: str, *, add_special_tokens: bool = True) -> list[dict[str, Any]]:
    """The fake tokenizer: each <|...|> is one token, then words and punctuation marks.

    Like TGI's /tokenize for Llama 3 it prepends <|begin_of_text|>, which covers no input
    characters (start == stop == 0) and so has empty text, as TGI derives text from offsets.
    """
    tokens: list[dict[str, Any]] = []
    if add_special_tokens:
        tokens.append({"id": BOS_ID, "text": "", "start": 0, "stop": 0})
    for match in _TOKEN.finditer(text):
        piece = match.group()
        tokens.append(
            {"id": _token_id(piece), "text": piece, "start": match.start(), "stop": match.end()}
        )
    return tokens


def split_answer(answer: str) -> list[str]:
    """Word-ish token texts, each with its leading whitespace; they join to `answer`."""
    return _PIECE.findall(answer)


def last_user_message(prompt: str) -> str | None:
    """The content of the last user turn of a Llama 3 prompt, or None."""
    found = _LAST_USER.findall(prompt)
    return found[-1] if found else None


def default_responder(prompt: str) -> str:
    user = last_user_message(prompt)
    return f"You said: {user if user is not None else prompt}"


def render_llama3(messages: list[dict[str, Any]]) -> str:
    """The chat template TGI applies for /v1/chat/completions (kept independent of llm/)."""
    turns = "".join(
        f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n{str(m['content']).strip()}<|eot_id|>"
        for m in messages
    )
    return f"<|begin_of_text|>{turns}<|start_header_id|>assistant<|end_header_id|>\n\n"


def _token_id(piece: str) -> int:
    if piece in SPECIAL_IDS:
        return SPECIAL_IDS[piece]
    return zlib.crc32(piece.encode("utf-8")) % BOS_ID


def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


class FakeTGI:
    """`with FakeTGI() as tgi:` then point the client at `tgi.url`."""

    def __init__(
        self,
        *,
        responder: Callable[[str], str] | None = None,
        ttft: float = 0.0,
        token_interval: float = 0.0,
        max_batch: int = 128,
        max_concurrent_requests: int = 128,
        max_input_tokens: int = 8191,
        max_total_tokens: int = 8192,
        tokens_before_failure: int = 2,
        tokenize_enabled: bool = True,
        api_key: str | None = None,
        sse_variety: bool = False,
    ) -> None:
        self.responder: Callable[[str], str] = responder or default_responder
        self.ttft = ttft  # seconds from admission into the batch to the first token
        self.token_interval = token_interval  # seconds between two tokens
        self.max_concurrent_requests = max_concurrent_requests
        self.max_input_tokens = max_input_tokens
        self.max_total_tokens = max_total_tokens
        self.tokens_before_failure = tokens_before_failure  # for "midstream" and "stall"
        self.tokenize_enabled = tokenize_enabled  # False: /tokenize answers 404 like TGI
        self.api_key = api_key  # required by the /v1 routes when set
        self.sse_variety = sse_variety  # comments, multi-line data, CRLF in the chat stream
        self._max_batch = max_batch

        self.requests: list[RecordedRequest] = []
        self.first_token_times: list[FirstToken] = []
        self.in_flight = 0  # generations holding a batch slot
        self.max_in_flight = 0
        self.queued = 0  # generations waiting for a slot
        self._admitted = 0  # queued + in flight, against max_concurrent_requests

        self._lock = threading.Lock()
        self._failures: deque[FailureKind] = deque()
        self._waiters: list[asyncio.Future[None]] = []

        app = web.Application()
        app.router.add_post("/", self._compat)
        app.router.add_post("/generate", self._generate)
        app.router.add_post("/generate_stream", self._generate_stream)
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/info", self._info)
        app.router.add_get("/health", self._health)
        app.router.add_get("/v1/models", self._models)
        self._server = BackgroundServer(app)

    # -- control, from the test thread -------------------------------------------------

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> FakeTGI:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def max_batch(self) -> int:
        return self._max_batch

    @max_batch.setter
    def max_batch(self, value: int) -> None:
        if value < 1:
            raise ValueError("max_batch must be >= 1")
        self._max_batch = value
        if not self._server.loop.is_closed():  # let queued requests re-check
            self._server.call_soon(self._wake_waiters)

    def fail_next(self, kind: FailureKind, times: int = 1) -> None:
        """Make the next `times` generation requests fail this way."""
        if kind not in get_args(FailureKind):
            raise ValueError(f"unknown failure kind {kind!r}")
        with self._lock:
            self._failures.extend([kind] * times)

    def reset(self) -> None:
        """Forget recorded requests, timings, peaks and pending failures."""
        with self._lock:
            self.requests.clear()
            self.first_token_times.clear()
            self._failures.clear()
            self.max_in_flight = self.in_flight

    @property
    def generations(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path in GENERATION_PATHS]

    @property
    def prompts(self) -> list[str]:
        """The `inputs` of every /generate-style request, in arrival order."""
        return [
            r.body["inputs"]
            for r in self.generations
            if isinstance(r.body, dict) and isinstance(r.body.get("inputs"), str)
        ]

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> None:
        """Block the test thread until `count` generation requests arrived."""
        deadline = time.monotonic() + timeout
        while len(self.generations) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(self.generations)} of {count} requests arrived")
            time.sleep(0.005)

    # -- server side ---------------------------------------------------------------------

    def _wake_waiters(self) -> None:
        """Let every queued request re-check for a free slot (server loop only)."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _record(self, request: web.Request) -> RecordedRequest:
        body: Any = None
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                body = None
        with self._lock:
            record = RecordedRequest(
                len(self.requests),
                request.method,
                request.path,
                body,
                time.monotonic(),
                dict(request.headers),
            )
            self.requests.append(record)
        return record

    def _take_failure(self) -> FailureKind | None:
        with self._lock:
            return self._failures.popleft() if self._failures else None

    def _note_first_token(self, index: int) -> None:
        with self._lock:
            self.first_token_times.append(FirstToken(index, time.monotonic(), time.time()))

    @contextlib.asynccontextmanager
    async def _batch_slot(self) -> AsyncIterator[None]:
        """Admission like TGI's: over max_concurrent_requests is "overloaded"; beyond
        max_batch generating at once, requests wait in the queue."""
        if self._admitted >= self.max_concurrent_requests:
            raise _Rejection(429, "Model is overloaded", "overloaded")
        self._admitted += 1
        try:
            self.queued += 1
            try:
                while self.in_flight >= self._max_batch:
                    waiter = asyncio.get_running_loop().create_future()
                    self._waiters.append(waiter)
                    await waiter
            finally:
                self.queued -= 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                yield
            finally:
                # Synchronous on purpose: this also runs when a handler abandoned at shutdown
                # is garbage-collected, with no loop running.
                self.in_flight -= 1
                self._wake_waiters()
        finally:
            self._admitted -= 1

    def _parse_generate(self, body: Any) -> _Generation:
        """TGI's validation of a /generate body; raises _Rejection(422) like TGI."""
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), str):
            raise _Rejection(422, "Failed to deserialize the JSON body", "validation")
        params = body.get("parameters") or {}
        prompt: str = body["inputs"]
        temperature = params.get("temperature")
        top_p = params.get("top_p")
        repetition_penalty = params.get("repetition_penalty")
        stop = params.get("stop") or []
        if not prompt:
            raise _Rejection(422, "Input validation error: `inputs` cannot be empty", "validation")
        if temperature is not None and temperature <= 0:
            raise _Rejection(
                422, "Input validation error: `temperature` must be strictly positive", "validation"
            )
        if top_p is not None and not 0 < top_p < 1:
            raise _Rejection(
                422, "Input validation error: `top_p` must be > 0.0 and < 1.0", "validation"
            )
        if repetition_penalty is not None and repetition_penalty <= 0:
            raise _Rejection(
                422,
                "Input validation error: `repetition_penalty` must be strictly positive",
                "validation",
            )
        if len(stop) > 4:
            raise _Rejection(
                422,
                "Input validation error: `stop` supports up to 4 stop sequences. "
                f"Given: {len(stop)}",
                "validation",
            )
        input_length = len(fake_tokenize(prompt))
        max_new_tokens = params.get("max_new_tokens")
        if max_new_tokens is None:
            max_new_tokens = max(1, min(1024, self.max_total_tokens - input_length))
        if max_new_tokens <= 0:
            raise _Rejection(
                422,
                "Input validation error: `max_new_tokens` must be strictly positive",
                "validation",
            )
        if input_length + max_new_tokens > self.max_total_tokens:
            raise _Rejection(
                422,
                f"Input validation error: `inputs` tokens + `max_new_tokens` must be <= "
                f"{self.max_total_tokens}. Given: {input_length} `inputs` tokens and "
                f"{max_new_tokens} `max_new_tokens`",
                "validation",
            )
        if input_length > self.max_input_tokens:
            raise _Rejection(
                422,
                f"Input validation error: `inputs` must have less than {self.max_input_tokens} "
                f"tokens. Given: {input_length}",
                "validation",
            )
        return _Generation(
            prompt=prompt,
            input_length=input_length,
            max_new_tokens=max_new_tokens,
            stop=[s for s in stop if s],
            details=bool(params.get("details", False)),
            do_sample=bool(params.get("do_sample", False)),
            seed=params.get("seed"),
            return_full_text=bool(params.get("return_full_text") or False),
        )

    def _tokens(self, gen: _Generation) -> tuple[list[dict[str, Any]], str, str]:
        """The token events' tokens, the generated text and the finish reason."""
        pieces = split_answer(self.responder(gen.prompt))
        tokens: list[dict[str, Any]] = []
        text = ""
        for piece in pieces:
            if len(tokens) == gen.max_new_tokens:
                return tokens, text, "length"
            tokens.append(
                {"id": _token_id(piece), "text": piece, "logprob": -0.25, "special": False}
            )
            text += piece
            if any(text.endswith(s) for s in gen.stop):
                return tokens, text, "stop_sequence"
        if len(tokens) == gen.max_new_tokens:
            return tokens, text, "length"
        tokens.append({"id": EOT_ID, "text": EOT, "logprob": -0.01, "special": True})
        return tokens, text, "eos_token"

    def _seed(self, gen: _Generation) -> int | None:
        if not gen.do_sample:
            return None
        return gen.seed if gen.seed is not None else 42

    def _failure_response(self, kind: FailureKind | None) -> web.Response | None:
        if kind == "429":
            return web.json_response(
                {"error": "Model is overloaded", "error_type": "overloaded"}, status=429
            )
        if kind == "500":
            return web.json_response(
                {"error": "Incomplete generation", "error_type": "incomplete_generation"},
                status=500,
            )
        if kind == "422":
            return web.json_response(
                {"error": "Input validation error: injected", "error_type": "validation"},
                status=422,
            )
        if kind == "503":
            return web.json_response(
                {"error": "Service unavailable", "error_type": "unavailable"}, status=503
            )
        return None

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        """OpenAI's 401 when `api_key` is set and the request does not carry it."""
        if self.api_key is None or request.headers.get("Authorization") == (
            f"Bearer {self.api_key}"
        ):
            return None
        return web.json_response(
            {
                "error": {
                    "message": "Incorrect API key provided.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                }
            },
            status=401,
        )

    async def _compat(self, request: web.Request) -> web.StreamResponse:
        record = await self._record(request)
        stream = isinstance(record.body, dict) and bool(record.body.get("stream"))
        if stream:
            return await self._run_stream(request, record)
        return await self._run_generate(record, wrap_in_list=True)

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        return await self._run_generate(await self._record(request), wrap_in_list=False)

    async def _generate_stream(self, request: web.Request) -> web.StreamResponse:
        return await self._run_stream(request, await self._record(request))

    async def _run_generate(self, record: RecordedRequest, *, wrap_in_list: bool) -> web.Response:
        failure = self._take_failure()
        if (response := self._failure_response(failure)) is not None:
            return response
        try:
            gen = self._parse_generate(record.body)
            async with self._batch_slot():
                await asyncio.sleep(self.ttft)
                tokens, text, finish_reason = self._tokens(gen)
                if failure == "midstream":
                    raise _Rejection(424, "Request failed during generation", "generation")
                if failure == "stall":
                    await asyncio.sleep(_STALL_LIMIT)
                await asyncio.sleep(self.token_interval * max(0, len(tokens) - 1))
        except _Rejection as rejection:
            return web.json_response(rejection.body, status=rejection.status)
        self._note_first_token(record.index)
        result: dict[str, Any] = {
            "generated_text": gen.prompt + text if gen.return_full_text else text
        }
        if gen.details:
            result["details"] = {
                "finish_reason": finish_reason,
                "generated_tokens": len(tokens),
                "seed": self._seed(gen),
                "prefill": [],
                "tokens": tokens,
            }
        return web.json_response([result] if wrap_in_list else result, dumps=_dumps)

    async def _run_stream(
        self, request: web.Request, record: RecordedRequest
    ) -> web.StreamResponse:
        failure = self._take_failure()
        if (response := self._failure_response(failure)) is not None:
            return response
        sse = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await sse.prepare(request)
        # ConnectionError: the client went away (timed out, cancelled); nothing left to do.
        with contextlib.suppress(ConnectionError):
            await self._stream_events(request, sse, record, failure)
        return sse

    async def _stream_events(
        self,
        request: web.Request,
        sse: web.StreamResponse,
        record: RecordedRequest,
        failure: FailureKind | None,
    ) -> None:
        async def send(data: Any) -> None:
            await sse.write(f"data:{_dumps(data)}\n\n".encode())

        try:
            gen = self._parse_generate(record.body)
            async with self._batch_slot():
                await asyncio.sleep(self.ttft)
                tokens, text, finish_reason = self._tokens(gen)
                # A failing stream never reaches its last (final) event.
                cutoff = len(tokens)
                if failure in ("midstream", "stall"):
                    cutoff = min(self.tokens_before_failure, len(tokens) - 1)
                for i, token in enumerate(tokens, start=1):
                    if i > cutoff:
                        break
                    if i > 1:
                        await asyncio.sleep(self.token_interval)
                    last = i == len(tokens)
                    event: dict[str, Any] = {
                        "index": i,
                        "token": token,
                        "generated_text": None,
                        "details": None,
                        "top_tokens": None,
                    }
                    if last:
                        event["generated_text"] = (
                            gen.prompt + text if gen.return_full_text else text
                        )
                        if gen.details:
                            event["details"] = {
                                "finish_reason": finish_reason,
                                "generated_tokens": len(tokens),
                                "seed": self._seed(gen),
                                "input_length": gen.input_length,
                            }
                    await send(event)
                    if i == 1:
                        self._note_first_token(record.index)
                if failure == "midstream":
                    raise _Rejection(
                        200,
                        "Request failed during generation: Server error: injected",
                        "generation",
                    )
                if failure == "stall":
                    await self._hold_open(request)
        except _Rejection as rejection:
            await send(rejection.body)

    async def _hold_open(self, request: web.Request) -> None:
        """Send nothing more, keep the connection open until the client gives up."""
        deadline = time.monotonic() + _STALL_LIMIT
        while time.monotonic() < deadline:
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            await asyncio.sleep(0.02)

    async def _tokenize(self, request: web.Request) -> web.Response:
        record = await self._record(request)
        if not self.tokenize_enabled:
            return web.json_response(
                {
                    "error": "No fast tokenizer or tokenizer.json for this model",
                    "error_type": "no fast tokenizer",
                },
                status=404,
            )
        body = record.body
        if not isinstance(body, dict) or not isinstance(body.get("inputs"), str):
            return web.json_response(
                {"error": "Failed to deserialize the JSON body", "error_type": "validation"},
                status=422,
            )
        add_special = body.get("add_special_tokens", True) is not False
        return web.json_response(
            fake_tokenize(body["inputs"], add_special_tokens=add_special), dumps=_dumps
        )

    async def _info(self, request: web.Request) -> web.Response:
        await self._record(request)
        return web.json_response(
            {
                "model_id": MODEL_ID,
                "model_sha": "e1945c40cd546c78e41f1151f4db032b271faeaa",
                "model_pipeline_tag": "text-generation",
                "max_concurrent_requests": self.max_concurrent_requests,
                "max_best_of": 2,
                "max_stop_sequences": 4,
                "max_input_tokens": self.max_input_tokens,
                "max_total_tokens": self.max_total_tokens,
                "validation_workers": 2,
                "max_client_batch_size": 4,
                "router": "text-generation-router",
                "version": "2.4.1",
                "sha": None,
                "docker_label": None,
            }
        )

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def _models(self, request: web.Request) -> web.Response:
        """TGI's /v1/models: the one model it serves, in OpenAI's list shape."""
        await self._record(request)
        if (denied := self._unauthorized(request)) is not None:
            return denied
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": MODEL_ID, "object": "model", "created": 0, "owned_by": MODEL_ID}],
            }
        )

    def _sse(self, data: str) -> bytes:
        """One chat-stream event; with `sse_variety` framed as other servers may frame it."""
        if not self.sse_variety:
            return f"data: {data}\n\n".encode()
        if data.startswith("{"):
            # Indented JSON breaks lines only between tokens; SSE joins the lines with "\n".
            data = json.dumps(json.loads(data), indent=1, ensure_ascii=False)
        lines = "".join(f"data:{line}\r\n" for line in data.split("\n"))
        return f": keep-alive\r\n{lines}\r\n".encode()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        record = await self._record(request)
        if (denied := self._unauthorized(request)) is not None:
            return denied
        body = record.body
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return web.json_response(
                {"error": "Failed to deserialize the JSON body", "error_type": "validation"},
                status=422,
            )
        failure = self._take_failure()
        if (response := self._failure_response(failure)) is not None:
            return response
        temperature = body.get("temperature")
        greedy = temperature is not None and temperature == 0  # TGI: 0 means greedy here
        generate_body = {
            "inputs": render_llama3(body["messages"]),
            "parameters": {
                "max_new_tokens": body.get("max_tokens"),
                "temperature": None if greedy else temperature,
                "top_p": body.get("top_p"),
                "stop": body.get("stop") or [],
                "do_sample": not greedy,
                "details": True,
                "seed": body.get("seed"),
            },
        }
        try:
            gen = self._parse_generate(generate_body)
        except _Rejection as rejection:
            return web.json_response(rejection.body, status=rejection.status)
        common: dict[str, Any] = {
            "id": "",
            "created": int(time.time()),
            "model": MODEL_ID,
            "system_fingerprint": "2.4.1-native",
        }
        if not body.get("stream"):
            try:
                async with self._batch_slot():
                    await asyncio.sleep(self.ttft)
                    tokens, text, finish_reason = self._tokens(gen)
                    await asyncio.sleep(self.token_interval * max(0, len(tokens) - 1))
            except _Rejection as rejection:
                return web.json_response(rejection.body, status=rejection.status)
            self._note_first_token(record.index)
            return web.json_response(
                {
                    **common,
                    "object": "chat.completion",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "logprobs": None,
                            "finish_reason": _chat_finish(finish_reason),
                        }
                    ],
                    "usage": {
                        "prompt_tokens": gen.input_length,
                        "completion_tokens": len(tokens),
                        "total_tokens": gen.input_length + len(tokens),
                    },
                },
                dumps=_dumps,
            )
        sse = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await sse.prepare(request)
        try:
            async with self._batch_slot():
                await asyncio.sleep(self.ttft)
                tokens, _, finish_reason = self._tokens(gen)
                cutoff = len(tokens)
                if failure in ("midstream", "stall"):
                    cutoff = min(self.tokens_before_failure, len(tokens) - 1)
                for i, token in enumerate(tokens, start=1):
                    if i > cutoff:
                        break
                    if i > 1:
                        await asyncio.sleep(self.token_interval)
                    last = i == len(tokens)
                    chunk = {
                        **common,
                        "object": "chat.completion.chunk",
                        "choices": [
                            {
                                "index": 0,
                                "delta": {
                                    "role": "assistant",
                                    "content": "" if token["special"] else token["text"],
                                },
                                "logprobs": None,
                                "finish_reason": _chat_finish(finish_reason) if last else None,
                            }
                        ],
                    }
                    await sse.write(self._sse(_dumps(chunk)))
                    if i == 1:
                        self._note_first_token(record.index)
                if failure == "midstream":
                    raise _Rejection(
                        200,
                        "Request failed during generation: Server error: injected",
                        "generation",
                    )
                if failure == "stall":
                    await self._hold_open(request)
                    return sse
                await sse.write(self._sse("[DONE]"))
        except _Rejection as rejection:
            await sse.write(self._sse(_dumps(rejection.body)))
        except ConnectionError:
            pass  # the client went away
        return sse


def _chat_finish(finish_reason: str) -> str:
    return "length" if finish_reason == "length" else "stop"
