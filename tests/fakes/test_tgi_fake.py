"""The TGI emulator speaks TGI's wire format: checked with the real text_generation client
and with raw HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
from text_generation import AsyncClient, Client
from text_generation.errors import OverloadedError, ValidationError

from tests.fakes.tgi import (
    FakeTGI,
    default_responder,
    fake_tokenize,
    last_user_message,
    render_llama3,
    split_answer,
)

pytestmark = pytest.mark.filterwarnings("ignore:The `dict` method is deprecated:DeprecationWarning")

PROMPT = render_llama3(
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Ping, please."}]
)
ANSWER = "You said: Ping, please."


@pytest.fixture
def tgi() -> Iterator[FakeTGI]:
    with FakeTGI() as server:
        yield server


async def post(url: str, body: dict[str, Any]) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as resp:
        return resp.status, await resp.read()


def events(raw: bytes) -> list[str]:
    """SSE payloads, checking the framing: every event is one `data:` line and a blank one."""
    assert raw.endswith(b"\n\n")
    chunks = raw.decode().split("\n\n")[:-1]
    assert all(chunk.startswith("data:") and "\n" not in chunk for chunk in chunks)
    return [chunk.removeprefix("data:") for chunk in chunks]


def test_helpers() -> None:
    assert "".join(split_answer(" Hi,  there!\n ok ")) == " Hi,  there!\n ok "
    assert split_answer("Hi, you") == ["Hi", ",", " you"]
    assert last_user_message(PROMPT) == "Ping, please."
    assert default_responder(PROMPT) == ANSWER
    assert default_responder("raw") == "You said: raw"


def test_tokenizer_offsets() -> None:
    tokens = fake_tokenize("Hi <|eot_id|>you!")
    assert tokens[0] == {"id": 128000, "text": "", "start": 0, "stop": 0}
    assert [(t["text"], t["start"], t["stop"]) for t in tokens[1:]] == [
        ("Hi", 0, 2),
        ("<|eot_id|>", 3, 13),
        ("you", 13, 16),
        ("!", 16, 17),
    ]
    assert tokens[2]["id"] == 128009


async def test_real_client_streams(tgi: FakeTGI) -> None:
    client = AsyncClient(tgi.url)
    responses = [r async for r in client.generate_stream(PROMPT, max_new_tokens=50)]
    assert "".join(r.token.text for r in responses if not r.token.special) == ANSWER
    assert [r.token.special for r in responses][-2:] == [False, True]
    assert responses[-1].token.text == "<|eot_id|>"
    assert responses[-1].generated_text == ANSWER
    assert responses[-1].details.finish_reason == "eos_token"
    assert responses[-1].details.generated_tokens == len(responses)
    assert all(r.details is None and r.generated_text is None for r in responses[:-1])
    assert tgi.generations[-1].path == "/"


async def test_real_client_generate(tgi: FakeTGI) -> None:
    response = await AsyncClient(tgi.url).generate(PROMPT, max_new_tokens=3)
    assert response.generated_text == "You said:"
    assert response.details.finish_reason == "length"
    assert response.details.generated_tokens == 3


def test_real_sync_client(tgi: FakeTGI) -> None:
    client = Client(tgi.url)
    assert client.generate(PROMPT, max_new_tokens=50).generated_text == ANSWER
    text = "".join(
        r.token.text
        for r in client.generate_stream(PROMPT, max_new_tokens=50)
        if not r.token.special
    )
    assert text == ANSWER


async def test_real_client_sees_errors(tgi: FakeTGI) -> None:
    client = AsyncClient(tgi.url)
    tgi.fail_next("429")
    with pytest.raises(OverloadedError):
        await client.generate(PROMPT)
    with pytest.raises(ValidationError):  # from the stream's error event
        async for _ in client.generate_stream(PROMPT, max_new_tokens=9000):
            pass


async def test_raw_stream_format(tgi: FakeTGI) -> None:
    body = {"inputs": PROMPT, "parameters": {"max_new_tokens": 50, "details": True}}
    status, raw = await post(f"{tgi.url}/generate_stream", body)
    assert status == 200
    payloads = [json.loads(e) for e in events(raw)]
    assert [p["index"] for p in payloads] == list(range(1, len(payloads) + 1))
    assert list(payloads[0]) == ["index", "token", "generated_text", "details", "top_tokens"]
    assert set(payloads[0]["token"]) == {"id", "text", "logprob", "special"}
    final = payloads[-1]
    assert final["token"] == {"id": 128009, "text": "<|eot_id|>", "logprob": -0.01, "special": True}
    assert final["generated_text"] == ANSWER
    assert final["details"]["finish_reason"] == "eos_token"
    assert final["details"]["seed"] is None  # greedy


async def test_stop_sequence(tgi: FakeTGI) -> None:
    body = {"inputs": PROMPT, "parameters": {"stop": [","], "details": True}}
    status, raw = await post(f"{tgi.url}/generate", body)
    result = json.loads(raw)
    assert status == 200
    assert result["generated_text"] == "You said: Ping,"
    assert result["details"]["finish_reason"] == "stop_sequence"


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"temperature": 0}, "temperature"),
        ({"top_p": 1.0}, "top_p"),
        ({"max_new_tokens": 9000}, "must be <= 8192"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
async def test_validation(tgi: FakeTGI, parameters: dict[str, Any], message: str) -> None:
    status, raw = await post(f"{tgi.url}/generate", {"inputs": PROMPT, "parameters": parameters})
    error = json.loads(raw)
    assert status == 422
    assert error["error_type"] == "validation"
    assert message in error["error"]
    # Streaming: the same error as an event, with HTTP 200 (as TGI does).
    body = {"inputs": PROMPT, "parameters": parameters, "stream": True}
    status, raw = await post(tgi.url, body)
    assert status == 200
    (event,) = events(raw)
    assert json.loads(event) == error


async def test_input_too_long(tgi: FakeTGI) -> None:
    tgi.max_input_tokens = 5
    status, raw = await post(f"{tgi.url}/generate", {"inputs": PROMPT})
    assert status == 422
    assert "must have less than 5 tokens" in json.loads(raw)["error"]


@pytest.mark.parametrize("kind", ["429", "500", "422"])
async def test_injected_http_failures(tgi: FakeTGI, kind: str) -> None:
    tgi.fail_next(kind, times=2)  # type: ignore[arg-type]
    for _ in range(2):
        status, raw = await post(tgi.url, {"inputs": PROMPT, "stream": True})
        assert status == int(kind)
        assert set(json.loads(raw)) == {"error", "error_type"}
    status, _ = await post(tgi.url, {"inputs": PROMPT, "stream": True})
    assert status == 200


async def test_injected_midstream_failure(tgi: FakeTGI) -> None:
    tgi.fail_next("midstream")
    status, raw = await post(tgi.url, {"inputs": PROMPT, "stream": True})
    payloads = [json.loads(e) for e in events(raw)]
    assert status == 200
    assert len(payloads) == 3
    assert payloads[-1]["error_type"] == "generation"


def test_unknown_failure_kind(tgi: FakeTGI) -> None:
    with pytest.raises(ValueError, match="unknown"):
        tgi.fail_next("404")  # type: ignore[arg-type]


async def test_tokenize_info_health(tgi: FakeTGI) -> None:
    status, raw = await post(f"{tgi.url}/tokenize", {"inputs": "Hi there"})
    assert status == 200
    assert json.loads(raw) == fake_tokenize("Hi there")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{tgi.url}/info") as resp:
            info = await resp.json()
        async with session.get(f"{tgi.url}/health") as resp:
            assert resp.status == 200
    assert info["model_id"] == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert (info["max_input_tokens"], info["max_total_tokens"]) == (8191, 8192)
    assert info["max_concurrent_requests"] == 128
    tgi.tokenize_enabled = False
    status, _ = await post(f"{tgi.url}/tokenize", {"inputs": "Hi"})
    assert status == 404


async def test_chat_completions(tgi: FakeTGI) -> None:
    messages = [{"role": "user", "content": "Ping, please."}]
    status, raw = await post(
        f"{tgi.url}/v1/chat/completions", {"model": "tgi", "messages": messages}
    )
    completion = json.loads(raw)
    assert status == 200
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": ANSWER}
    assert completion["choices"][0]["finish_reason"] == "stop"
    body = {"model": "tgi", "messages": messages, "stream": True, "temperature": 0}
    status, raw = await post(f"{tgi.url}/v1/chat/completions", body)
    payloads = events(raw)
    assert payloads[-1] == " [DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == ANSWER
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert tgi.generations[-1].body["messages"] == messages


async def test_queue_limits_concurrent_generations(tgi: FakeTGI) -> None:
    tgi.max_batch = 2
    tgi.token_interval = 0.02
    client = AsyncClient(tgi.url)

    async def one() -> str:
        parts = [r.token.text async for r in client.generate_stream(PROMPT, max_new_tokens=50)]
        return "".join(parts)

    results = await asyncio.gather(*(one() for _ in range(5)))
    assert all(r.startswith(ANSWER) for r in results)
    assert tgi.max_in_flight == 2
    assert tgi.in_flight == 0
    indexes = sorted(t.index for t in tgi.first_token_times)
    assert indexes == sorted(r.index for r in tgi.generations)
    tgi.reset()
    tgi.max_batch = 5
    await asyncio.gather(*(one() for _ in range(5)))
    assert tgi.max_in_flight == 5


async def test_max_batch_change_releases_waiters(tgi: FakeTGI) -> None:
    tgi.max_batch = 1
    tgi.fail_next("stall")  # holds the only slot while its stream stays open
    client = AsyncClient(tgi.url, timeout=5)
    stalled = client.generate_stream(PROMPT)
    assert (await anext(stalled)).token.text == "You"

    async def first_token() -> str:
        stream = client.generate_stream(PROMPT)
        try:
            return str((await anext(stream)).token.text)
        finally:
            await stream.aclose()

    waiting = asyncio.ensure_future(first_token())
    await asyncio.sleep(0.1)
    assert (tgi.queued, tgi.in_flight) == (1, 1)
    assert not waiting.done()
    tgi.max_batch = 2
    assert await asyncio.wait_for(waiting, 2) == "You"
    await stalled.aclose()


def test_wait_for_requests(tgi: FakeTGI) -> None:
    with pytest.raises(TimeoutError):
        tgi.wait_for_requests(1, timeout=0.05)
