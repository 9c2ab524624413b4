"""LocalChatModel: the packaged Gemma 3 270M, run in this process with llama-cpp-python.

The tests that generate need llama-cpp-python (the `local` extra; .ci/run installs it) and skip,
saying so, only where it cannot be imported. Generations are kept to a few dozen tokens.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import time
from pathlib import Path

import pytest

from llm.base import ChatMessage, ChatModel, GenerationParams, ModelTimeout
from llm.factory import create_model, describe_backend
from llm.local import (
    INSTALL_COMMAND,
    LocalChatModel,
    LocalModelConfig,
    LocalModelMissing,
    render_gemma,
    render_transcript,
)
from parley.settings import DEFAULT_SYSTEM_PROMPT, load_settings

try:
    importlib.import_module("llama_cpp")
    LLAMA_CPP_MISSING: str | None = None
except ImportError as exc:
    LLAMA_CPP_MISSING = str(exc)

needs_llama_cpp = pytest.mark.skipif(
    LLAMA_CPP_MISSING is not None,
    reason=f"llama-cpp-python is not installed ({LLAMA_CPP_MISSING}): "
    f"{INSTALL_COMMAND}, as .ci/run does",
)

# One thread: llama.cpp's threads wait for each other actively, so on a CI machine shared with
# other work, more threads than free cores make generation slower, not faster.
CONFIG = LocalModelConfig(model_path=None, chat_format=None, threads=1, context_tokens=2048)
GREEDY = GenerationParams(max_new_tokens=16, temperature=0.0)
# The pretrained 270M model repeats itself on this prompt until max_new_tokens: a long answer.
LONG_PROMPT = [ChatMessage("user", "Write a long essay about the history of Rome.")]
LONG = GenerationParams(max_new_tokens=24, temperature=0.0, repetition_penalty=1.0)


async def collect(
    model: LocalChatModel, messages: list[ChatMessage], params: GenerationParams
) -> str:
    return "".join([chunk async for chunk in model.stream(messages, params)])


@pytest.fixture
def model() -> LocalChatModel:
    return LocalChatModel(CONFIG, generation_timeout=60.0, token_timeout=30.0)


async def wait_idle(model: LocalChatModel, within: float) -> float:
    started = time.monotonic()
    while model.generating:
        assert time.monotonic() - started < within, "the generation did not stop"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


# -- without a model ---------------------------------------------------------------------


def test_gemma_format_opens_the_first_turn_with_the_system_prompt() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": " Hi "},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
    ]
    prompt, stop = render_gemma(messages)
    assert prompt == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello.<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert stop == ["<end_of_turn>"]


def test_transcript_format() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye "},
    ]
    prompt, stop = render_transcript(messages)
    assert prompt == "Be brief.\n\nQuestion: Hi\nAnswer: Hello.\nQuestion: Bye\nAnswer:"
    assert stop == ["\nQuestion:", "\nAnswer:"]


async def test_missing_llama_cpp_names_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # as if it were not installed
    # A configuration no other test loads, so that nothing is loaded for it already.
    backend = LocalChatModel(LocalModelConfig(None, None, 1, 1536))
    with pytest.raises(LocalModelMissing, match=r"pip install 'parley\[local\]'") as raised:
        await backend.server_info()
    assert "PARLEY_LLM_BACKEND=local" in str(raised.value)
    assert not raised.value.retryable
    with pytest.raises(LocalModelMissing):
        await collect(backend, LONG_PROMPT, GREEDY)


def test_create_model_builds_without_loading() -> None:
    settings = load_settings(
        llm_backend="local",
        local_model_path="/models/llama-3-8b-instruct.Q4_K_M.gguf",
        local_chat_format="llama-3",
        local_threads=3,
        context_tokens=4096,
    )
    backend = create_model(settings)
    assert isinstance(backend, LocalChatModel)
    chat_model: ChatModel = backend
    assert backend.config == LocalModelConfig(
        "/models/llama-3-8b-instruct.Q4_K_M.gguf", "llama-3", 3, 4096
    )
    assert chat_model.context_tokens == 4096  # the cap, until the model is loaded
    assert not backend.generating
    assert "llama-3-8b-instruct" in describe_backend(settings)
    default = create_model(load_settings(llm_backend="local"))
    assert isinstance(default, LocalChatModel)
    assert default.config.threads >= 1  # the cores this process may use
    assert describe_backend(load_settings(llm_backend="local")) == (
        "the local model (the packaged Gemma 3 270M)"
    )


# -- with llama-cpp-python ---------------------------------------------------------------


@needs_llama_cpp
async def test_answers_a_real_prompt(model: LocalChatModel) -> None:
    messages = [
        ChatMessage("system", DEFAULT_SYSTEM_PROMPT),
        ChatMessage("user", "What is the capital of France?"),
    ]
    answer = await collect(model, messages, GREEDY)
    assert "Paris" in answer
    assert answer == answer.lstrip()
    info = await model.server_info()
    assert info["model_id"] == "gemma-3-270m-q4_k_m"
    assert info["loaded"] is True
    assert info["chat_format"] == "transcript"  # the file carries no chat template
    assert info["n_ctx_train"] == 32768
    assert model.context_tokens == 2048  # n_ctx, capped by the settings


@needs_llama_cpp
async def test_counts_tokens_with_the_models_tokenizer(model: LocalChatModel) -> None:
    assert await model.count_tokens("  ") == 0
    assert await model.count_tokens("Hello") == 1
    # Special-token text in a message is broken up, so it costs more than one token.
    assert await model.count_tokens("<start_of_turn>") > 1
    assert await model.count_tokens("<b>") == 1  # HTML is left alone
    long_text = "word " * 2000  # counted on a thread
    assert 1000 <= await model.count_tokens(long_text) <= 2100


@needs_llama_cpp
async def test_concurrent_requests_take_turns_and_the_loop_keeps_running(
    model: LocalChatModel,
) -> None:
    await model.load()
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    async def timed() -> tuple[float, float, str]:
        first = 0.0
        text = ""
        async for chunk in model.stream(LONG_PROMPT, LONG):
            first = first or time.monotonic()
            text += chunk
        return first, time.monotonic(), text

    ticking = asyncio.create_task(ticker())
    started = time.monotonic()
    try:
        first = asyncio.create_task(timed())
        await asyncio.sleep(0)  # the first request is queued first
        second = asyncio.create_task(timed())
        (
            (_, first_end, first_text),
            (second_start, _, second_text),
        ) = await asyncio.gather(first, second)
    finally:
        ticking.cancel()
    elapsed = time.monotonic() - started
    assert first_text == second_text  # greedy: the same answer
    assert second_start >= first_end  # one after the other, in arrival order
    # The loop ran all along: it ticked about every 10 ms while the model worked.
    assert len(gaps) >= elapsed / 0.05
    assert max(gaps) < 0.25, f"the event loop stalled for {max(gaps):.3f}s"


@needs_llama_cpp
async def test_closing_the_stream_stops_the_generation(model: LocalChatModel) -> None:
    await model.load()
    long = GenerationParams(max_new_tokens=400, temperature=0.0, repetition_penalty=1.0)
    stream = model.stream(LONG_PROMPT, long)
    assert await anext(stream)
    assert model.generating
    await stream.aclose()
    # 400 tokens take many seconds; the generation ends at the next token.
    assert await wait_idle(model, within=2.0) < 2.0


@needs_llama_cpp
async def test_a_cancelled_request_leaves_the_queue_unstarted(model: LocalChatModel) -> None:
    await model.load()
    before = model.generations_started
    running = model.stream(LONG_PROMPT, GenerationParams(max_new_tokens=400, temperature=0.0))
    assert await anext(running)
    waiting = asyncio.create_task(collect(model, LONG_PROMPT, LONG))
    await asyncio.sleep(0.05)  # queued behind the running one
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await running.aclose()
    await wait_idle(model, within=2.0)
    assert model.generations_started == before + 1  # the cancelled one never ran
    assert await collect(model, LONG_PROMPT, LONG)
    assert model.generations_started == before + 2


@needs_llama_cpp
async def test_generation_timeout_stops_the_generation() -> None:
    backend = LocalChatModel(CONFIG, generation_timeout=0.3)
    await backend.load()
    long = GenerationParams(max_new_tokens=400, temperature=0.0, repetition_penalty=1.0)
    with pytest.raises(ModelTimeout, match=r"longer than 0\.3s"):
        await collect(backend, LONG_PROMPT, long)
    await wait_idle(backend, within=2.0)


@needs_llama_cpp
async def test_a_missing_model_file_names_the_setting(tmp_path: Path) -> None:
    backend = LocalChatModel(LocalModelConfig(str(tmp_path / "none.gguf"), None, 1, 2048))
    with pytest.raises(LocalModelMissing, match=r"PARLEY_LOCAL_MODEL_PATH=.*none\.gguf"):
        await backend.server_info()
    with pytest.raises(LocalModelMissing, match="PARLEY_LOCAL_MODEL_PATH"):
        await collect(backend, LONG_PROMPT, GREEDY)
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("not a model")
    with pytest.raises(LocalModelMissing, match="cannot load"):
        await LocalChatModel(LocalModelConfig(str(not_gguf), None, 1, 2048)).load()


@needs_llama_cpp
async def test_an_unknown_chat_format_is_refused() -> None:
    backend = LocalChatModel(LocalModelConfig(None, "no-such-format", 1, 2048))
    with pytest.raises(
        LocalModelMissing, match="PARLEY_LOCAL_CHAT_FORMAT=no-such-format"
    ) as raised:
        await backend.load()
    assert "llama-3" in str(raised.value)  # the known formats are listed


@needs_llama_cpp
async def test_an_explicit_chat_format() -> None:
    backend = LocalChatModel(LocalModelConfig(None, "gemma", 1, 1024))
    await backend.load()
    assert (await backend.server_info())["chat_format"] == "gemma"
    await collect(backend, LONG_PROMPT, GenerationParams(max_new_tokens=4))  # no error
