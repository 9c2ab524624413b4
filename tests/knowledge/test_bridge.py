"""knowledge.bridge: a question's words translated for BM25 through the multilingual model
(the packaged USE, really loaded)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from knowledge import bridge as bridge_module
from knowledge.bridge import TermBridge, build_bridge, vocabulary
from knowledge.faiss_store import FaissRetriever, FaissStore
from knowledge.ingest import ingest_folder
from knowledge.store import StoredChunk
from knowledge.use_embedder import UseEmbedder
from tests.fakes.embedders import CountingEmbedder

EN_ES = ("en", "es")

CHUNKS = [
    StoredChunk("v", "vacation.md", 0, "Vacation", "Carry-over", "Unused days carry over."),
    StoredChunk("p", "printers.md", 0, "Printers", "", "Add the printer from the settings."),
    StoredChunk("g", "gastos.md", 0, "Gastos", "", "Los gastos del viaje se pagan con la tarjeta."),
]


async def _bridge(chunks: list[StoredChunk] = CHUNKS) -> TermBridge:
    bridge = await build_bridge(chunks, UseEmbedder(), EN_ES)
    assert bridge is not None
    return bridge


async def _translate(bridge: TermBridge, question: str, language: str) -> dict[str, list[str]]:
    words = question.split()
    vectors = np.asarray(await UseEmbedder().embed(words), dtype=np.float32)
    return bridge.translate(words, vectors, language)


def test_the_vocabulary_keeps_each_word_under_the_languages_of_its_chunks() -> None:
    words = vocabulary(CHUNKS, EN_ES)
    assert {"vacation", "printer", "printers", "carry"} <= set(words["en"])
    assert {"gastos", "viaje", "tarjeta"} <= set(words["es"])
    assert "the" not in words["en"]  # stop words
    assert "los" not in words["es"]
    assert vocabulary(CHUNKS, ("en",)).keys() == {"en"}


def test_the_vocabulary_keeps_the_most_frequent_words(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bridge_module, "MAX_VOCABULARY", 1)
    chunks = [*CHUNKS, StoredChunk("v2", "vacation.md", 1, "Vacation", "", "Vacation rules.")]
    assert vocabulary(chunks, EN_ES) == {"en": ["vacation"]}


async def test_spanish_words_become_english_terms_and_back() -> None:
    bridge = await _bridge()
    assert bridge.words.keys() == set(EN_ES)

    # The English BM25 terms (Snowball stems) of the closest English words.
    to_english = await _translate(bridge, "vacaciones impresora", "es")
    assert set(to_english) == {"en"}
    assert {"vacat", "printer"} <= set(to_english["en"])

    to_spanish = await _translate(bridge, "travel card", "en")
    assert set(to_spanish) == {"es"}
    assert {"viaj", "tarjet"} <= set(to_spanish["es"])


async def test_words_without_a_close_translation_add_nothing() -> None:
    bridge = await _bridge()
    # Nothing of the corpus is near these (below MIN_SIMILARITY).
    assert await _translate(bridge, "jirafa", "es") == {}
    assert bridge.translate([], np.zeros((0, 512), dtype=np.float32), "es") == {}


async def test_one_language_needs_no_bridge() -> None:
    english = [c for c in CHUNKS if c.source != "gastos.md"]
    assert await build_bridge(english, UseEmbedder(), EN_ES) is None
    assert await build_bridge(CHUNKS, UseEmbedder(), ("en",)) is None


async def test_a_new_version_embeds_only_the_words_no_loaded_bridge_has() -> None:
    embedder = CountingEmbedder(UseEmbedder())
    first = await build_bridge(CHUNKS, embedder, EN_ES)
    assert first is not None
    assert len(embedder.texts) == len(first)
    embedder.texts.clear()

    edited = [*CHUNKS, StoredChunk("w", "wifi.md", 0, "Wifi", "", "Guests use the guest network.")]
    second = await build_bridge(edited, embedder, EN_ES, known=[first])
    assert second is not None
    assert sorted(embedder.texts) == ["guest", "guests", "network", "use", "wifi"]
    before, after = first.vector_of("vacation"), second.vector_of("vacation")
    assert before is not None
    assert after is not None
    assert np.array_equal(before, after)


async def test_a_spanish_question_gets_bm25_evidence_from_an_english_runbook(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "printers.md").write_text(
        "# Printers\n\nAdd the printer PRN-FLOOR2 from the settings.\n", encoding="utf-8"
    )
    (folder / "vacaciones.md").write_text(
        "# Vacaciones\n\nLos días de vacaciones se piden en el portal.\n", encoding="utf-8"
    )
    root = tmp_path / "index"
    embedder = UseEmbedder()
    await ingest_folder(folder, "it", store=FaissStore(root), embedder=embedder)
    question = "¿Cómo añado la impresora?"

    scores = {}
    for bridging in (True, False):
        retriever = FaissRetriever(root, embedder, translate_words=bridging)
        await retriever.search(question, ["it"], 1)  # loads the knowledge base
        loaded = retriever._loaded["it"]
        query = await retriever._prepare_query(question, 1, [loaded])
        rows = {chunk.source: row for row, chunk in enumerate(loaded.chunks)}
        scores[bridging] = float(retriever.lexical_scores(loaded, query)[rows["printers.md"]])
    assert scores[False] == 0.0  # no word of the question is in the English runbook
    assert scores[True] > 0.0
