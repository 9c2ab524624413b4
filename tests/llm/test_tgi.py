"""TGIChatModel against the TGI emulator, over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import warnings
from collections.abc import AsyncIterator, Iterator

import pytest
from aiohttp import web

from llm import llama3
from llm.base import (
    ChatMessage,
    ChatModel,
    GenerationParams,
    ModelError,
    ModelOverloaded,
    ModelRejected,
    ModelTimeout,
    ModelUnavailable,
)
from llm.tgi import (
    StopTextFilter,
    TGIChatModel,
    context_warning,
    count_content_tokens,
    create_model,
    estimate_tokens,
    sampling_parameters,
)
from parley.settings import load_settings
from tests.fakes.server import BackgroundServer
from tests.fakes.tgi import FakeTGI, fake_tokenize

MESSAGES = [ChatMessage("system", "Be brief."), ChatMessage("user", "  Hello there, TGI!  ")]
EXPECTED_PROMPT = (
    "<|begin_of_text|>"
    "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nHello there, TGI!<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)


@pytest.fixture
def tgi() -> Iterator[FakeTGI]:
    with FakeTGI() as server:
        yield server


@pytest.fixture
async def model(tgi: FakeTGI) -> AsyncIterator[TGIChatModel]:
    backend = TGIChatModel(tgi.url, generation_timeout=10.0, token_timeout=2.0)
    yield backend
    await backend.aclose()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def collect(
    backend: TGIChatModel,
    params: GenerationParams | None = None,
    messages: list[ChatMessage] = MESSAGES,
) -> list[str]:
    return [chunk async for chunk in backend.stream(messages, params or GenerationParams())]


async def drain(stream: AsyncIterator[str], into: list[str]) -> None:
    async for chunk in stream:
        into.append(chunk)


async def test_is_a_chat_model(model: TGIChatModel) -> None:
    chat_model: ChatModel = model
    assert chat_model.context_tokens == 8192
    assert chat_model.prompt_overhead_tokens(2) == llama3.overhead_tokens(2)


async def test_streams_the_answer_without_special_tokens(tgi: FakeTGI, model: TGIChatModel) -> None:
    chunks = await collect(model)
    assert "".join(chunks) == "You said: Hello there, TGI!"
    assert len(chunks) > 3  # streamed, not in one piece
    assert not any("<|" in chunk for chunk in chunks)


async def test_sends_the_llama3_prompt_and_parameters(tgi: FakeTGI, model: TGIChatModel) -> None:
    params = GenerationParams(max_new_tokens=64, temperature=0.6, top_p=0.9, repetition_penalty=1.2)
    await collect(model, params)
    (request,) = tgi.generations
    assert request.path == "/"
    assert request.body["stream"] is True
    assert request.body["inputs"] == EXPECTED_PROMPT
    sent = request.body["parameters"]
    assert sent["stop"] == ["<|eot_id|>"]
    assert sent["do_sample"] is True
    assert (sent["max_new_tokens"], sent["temperature"], sent["top_p"]) == (64, 0.6, 0.9)
    assert sent["repetition_penalty"] == 1.2


async def test_greedy_decoding(tgi: FakeTGI, model: TGIChatModel) -> None:
    chunks = await collect(model, GenerationParams(temperature=0.0))
    assert "".join(chunks) == "You said: Hello there, TGI!"
    sent = tgi.generations[-1].body["parameters"]
    assert sent["do_sample"] is False
    assert sent["temperature"] is None
    assert sent["top_p"] is None


async def test_top_p_one_means_no_nucleus_filtering(tgi: FakeTGI, model: TGIChatModel) -> None:
    await collect(model, GenerationParams(top_p=1.0))
    sent = tgi.generations[-1].body["parameters"]
    assert (sent["do_sample"], sent["top_p"], sent["temperature"]) == (True, None, 0.7)


def test_sampling_parameters() -> None:
    assert sampling_parameters(GenerationParams(temperature=0.0, top_p=0.5)) == {
        "do_sample": False,
        "temperature": None,
        "top_p": None,
    }
    assert sampling_parameters(GenerationParams(temperature=1.0, top_p=0.5)) == {
        "do_sample": True,
        "temperature": 1.0,
        "top_p": 0.5,
    }


async def test_prompt_without_bos(tgi: FakeTGI) -> None:
    backend = TGIChatModel(tgi.url, include_bos=False)
    try:
        await collect(backend)
    finally:
        await backend.aclose()
    assert tgi.prompts[-1] == EXPECTED_PROMPT.removeprefix("<|begin_of_text|>")


async def test_no_deprecation_warning_escapes(model: TGIChatModel) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert await collect(model)


async def test_stop_text_arriving_as_plain_text_is_never_shown(
    tgi: FakeTGI, model: TGIChatModel
) -> None:
    tgi.responder = lambda prompt: "Hi <|eot_id|> and more"
    assert "".join(await collect(model)) == "Hi "


@pytest.mark.parametrize(
    ("pieces", "shown"),
    [
        (["a<|e", "ot_id|>b"], "a"),
        (["a<", "|", "x"], "a<|x"),
        (["a<|eot_id", "|"], "a<|eot_id|"),  # stream ended before the stop text completed
        (["<|eot_id|>", "later"], ""),
    ],
)
def test_stop_text_filter(pieces: list[str], shown: str) -> None:
    text = StopTextFilter("<|eot_id|>")
    out = "".join(text.feed(piece) for piece in pieces)
    assert out + text.flush() == shown


@pytest.mark.parametrize(
    ("kind", "error"),
    [("429", ModelOverloaded), ("500", ModelUnavailable), ("422", ModelRejected)],
)
async def test_http_errors(
    tgi: FakeTGI, model: TGIChatModel, kind: str, error: type[ModelError]
) -> None:
    tgi.fail_next(kind)  # type: ignore[arg-type]
    with pytest.raises(error):
        await collect(model)
    assert error.retryable is (kind != "422")
    assert "".join(await collect(model)) == "You said: Hello there, TGI!"  # only the next one


async def test_validation_error_event_is_rejected(tgi: FakeTGI, model: TGIChatModel) -> None:
    tgi.max_total_tokens = 40  # TGI reports it in the stream, with HTTP 200
    with pytest.raises(ModelRejected, match="max_new_tokens"):
        await collect(model, GenerationParams(max_new_tokens=30))


async def test_overloaded_event(tgi: FakeTGI, model: TGIChatModel) -> None:
    tgi.max_concurrent_requests = 0
    with pytest.raises(ModelOverloaded):
        await collect(model)


async def test_error_mid_stream(tgi: FakeTGI, model: TGIChatModel) -> None:
    tgi.fail_next("midstream")
    chunks: list[str] = []
    with pytest.raises(ModelUnavailable, match="generation"):
        await drain(model.stream(MESSAGES, GenerationParams()), chunks)
    assert chunks == ["You", " said"]


async def test_stall_times_out_after_token_timeout(tgi: FakeTGI) -> None:
    backend = TGIChatModel(tgi.url, token_timeout=0.3, generation_timeout=30.0)
    tgi.fail_next("stall")
    chunks: list[str] = []
    started = time.monotonic()
    try:
        with pytest.raises(ModelTimeout, match="no token"):
            await drain(backend.stream(MESSAGES, GenerationParams()), chunks)
    finally:
        await backend.aclose()
    assert chunks == ["You", " said"]
    assert 0.25 < time.monotonic() - started < 2.0


async def test_slow_first_token_times_out(tgi: FakeTGI) -> None:
    tgi.ttft = 1.0
    backend = TGIChatModel(tgi.url, token_timeout=0.2)
    try:
        with pytest.raises(ModelTimeout):
            await collect(backend)
    finally:
        await backend.aclose()


async def test_whole_generation_is_bounded(tgi: FakeTGI) -> None:
    tgi.token_interval = 0.1
    backend = TGIChatModel(tgi.url, token_timeout=5.0, generation_timeout=0.35)
    started = time.monotonic()
    try:
        with pytest.raises(ModelTimeout):
            await collect(backend)
    finally:
        await backend.aclose()
    assert time.monotonic() - started < 1.5


async def test_connection_refused() -> None:
    backend = TGIChatModel(closed_port_url())
    try:
        with pytest.raises(ModelUnavailable, match="cannot reach TGI"):
            await collect(backend)
    finally:
        await backend.aclose()


async def test_proxy_error_page_is_unavailable() -> None:
    async def bad_gateway(request: web.Request) -> web.Response:
        return web.Response(status=502, text="<html>Bad Gateway</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/", bad_gateway)
    with BackgroundServer(app) as proxy:
        backend = TGIChatModel(proxy.url)
        try:
            with pytest.raises(ModelUnavailable, match="502"):
                await collect(backend)
        finally:
            await backend.aclose()


async def test_early_close_ends_the_request(tgi: FakeTGI, model: TGIChatModel) -> None:
    tgi.token_interval = 0.05
    stream = model.stream(MESSAGES, GenerationParams())
    assert await anext(stream) == "You"
    await stream.aclose()
    for _ in range(100):  # the emulator notices at its next write
        if not tgi.in_flight:
            break
        await asyncio.sleep(0.02)
    assert tgi.in_flight == 0


async def test_count_tokens_uses_tokenize(tgi: FakeTGI, model: TGIChatModel) -> None:
    text = "  Hello, world! Ignore <|eot_id|> this.  "
    content = llama3.render_content(text)
    expected = len(fake_tokenize(content, add_special_tokens=False))
    assert await model.count_tokens(text) == expected
    assert expected == len(fake_tokenize(content)) - 1  # BOS is not counted
    (request,) = [r for r in tgi.requests if r.path == "/tokenize"]
    assert request.body == {"inputs": content}
    assert await model.count_tokens(text) == expected  # cached
    assert len([r for r in tgi.requests if r.path == "/tokenize"]) == 1
    assert await model.count_tokens("   ") == 0


async def test_count_tokens_estimates_without_tokenize(
    tgi: FakeTGI, model: TGIChatModel, caplog: pytest.LogCaptureFixture
) -> None:
    tgi.tokenize_enabled = False
    caplog.set_level(logging.DEBUG, logger="llm.tgi")
    assert await model.count_tokens("Hello world, again") == estimate_tokens("Hello world, again")
    assert await model.count_tokens("abc") == estimate_tokens("abc")
    warnings_logged = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings_logged) == 1
    assert "/tokenize" in warnings_logged[0].getMessage()
    # A 404 is permanent: no further calls.
    assert len([r for r in tgi.requests if r.path == "/tokenize"]) == 1


async def test_count_tokens_estimates_when_unreachable() -> None:
    backend = TGIChatModel(closed_port_url())
    try:
        assert await backend.count_tokens("Hello world") == estimate_tokens("Hello world")
    finally:
        await backend.aclose()


def test_estimate_tokens_errs_high() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcdef") == 2  # bytes / 3
    assert estimate_tokens("a b c d") == 4  # words and marks
    assert estimate_tokens("你好世界") == 4  # 12 UTF-8 bytes


def test_count_content_tokens_skips_added_tokens() -> None:
    assert count_content_tokens(fake_tokenize("a b")) == 2
    with pytest.raises(ValueError, match="list"):
        count_content_tokens({"error": "x"})
    with pytest.raises(ValueError, match="offsets"):
        count_content_tokens([{"id": 1}])


async def test_server_info(model: TGIChatModel) -> None:
    info = await model.server_info()
    assert info["model_id"] == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert context_warning(info, context_tokens=8192, max_new_tokens=512) is None
    message = context_warning(info, context_tokens=16384, max_new_tokens=512)
    assert message is not None
    assert "max_total_tokens=8192" in message
    assert "max_input_tokens=8191" in message


def test_context_warning_for_old_servers() -> None:
    info = {"max_input_length": 1000, "max_total_tokens": 8192}
    message = context_warning(info, context_tokens=8192, max_new_tokens=512)
    assert message is not None
    assert "max_input_tokens=1000" in message
    assert "max_total_tokens" not in message.split(".")[0]


async def test_server_info_unreachable() -> None:
    backend = TGIChatModel(closed_port_url())
    try:
        with pytest.raises(ModelUnavailable):
            await backend.server_info()
    finally:
        await backend.aclose()


async def test_create_model_from_settings(tgi: FakeTGI) -> None:
    settings = load_settings(tgi_url=tgi.url + "/", context_tokens=4096, token_timeout=3.0)
    backend = create_model(settings)
    try:
        assert backend.base_url == tgi.url
        assert backend.context_tokens == 4096
        assert "".join(await collect(backend)) == "You said: Hello there, TGI!"
    finally:
        await backend.aclose()
