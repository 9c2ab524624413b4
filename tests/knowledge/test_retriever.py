"""FaissRetriever: reloads after a re-ingest, caches, keeps knowledge bases apart, ranks."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from knowledge import retriever as retriever_module
from knowledge.base import Embedder, KnowledgeError, KnowledgeMisconfigured, Passage
from knowledge.embeddings import HashingEmbedder
from knowledge.faiss_store import FaissStore
from knowledge.ingest import ingest_folder
from knowledge.retriever import Loaded
from tests.fakes.embedders import ConstantEmbedder, CountingEmbedder
from tests.knowledge.conftest import WriteFiles, retriever_for

HR = {
    "vacation.md": "# Vacation\n\n## Carry-over\n\nFive unused vacation days carry over.\n",
    "vacaciones.md": "# Vacaciones\n\n## Traslado\n\nSe pueden trasladar cinco días de "
    "vacaciones no disfrutados al año siguiente.\n",
    "gastos.md": "# Gastos\n\nLos informes de gastos se envían en Concur con los recibos.\n",
    "expenses.md": "# Expenses\n\nSubmit expense reports in Concur with itemized receipts.\n",
}
IT = {
    "vpn.md": "# VPN\n\nOpen GlobalProtect and sign in with your company account.\n",
    "impresora.md": "# Impresora\n\nPara añadir la impresora, abre Configuración y elige "
    "PRN-PLANTA2.\n",
}


async def _ingest(root: Path, folder: Path, kb: str, embedder: Embedder | None = None) -> None:
    embedder = embedder if embedder is not None else HashingEmbedder()
    await ingest_folder(folder, kb, store=FaissStore(root), embedder=embedder)


async def test_a_running_retriever_sees_a_reingest_without_restart(
    docs: WriteFiles, faiss_root: Path
) -> None:
    folder = docs({"wifi.md": "# Wi-Fi\n\nThe guest network password is SUNFLOWER.\n"})
    await _ingest(faiss_root, folder, "it")
    embedder = CountingEmbedder()
    retriever = retriever_for(faiss_root, embedder)
    (first,) = await retriever.search("guest wifi password", ["it"], 1)
    assert "SUNFLOWER" in first.text

    # Asked again: the cache answers, the question is not embedded again.
    assert await retriever.search("guest wifi password", ["it"], 1) == [first]
    assert embedder.calls == 1

    docs({"wifi.md": "# Wi-Fi\n\nThe guest network password is TULIP.\n"})
    await _ingest(faiss_root, folder, "it")
    (second,) = await retriever.search("guest wifi password", ["it"], 1)
    assert "TULIP" in second.text
    assert second.chunk_id != first.chunk_id
    assert embedder.calls == 2  # a new version is never answered from the cache


async def test_the_cache_is_a_small_lru(docs: WriteFiles, faiss_root: Path) -> None:
    await _ingest(faiss_root, docs(IT), "it")
    embedder = CountingEmbedder()
    retriever = retriever_for(faiss_root, embedder)
    retriever.cache.size = 2
    for question in ("vpn", "printer", "vpn", "account", "printer"):
        await retriever.search(question, ["it"], 2)
    assert len(retriever.cache) == 2
    # vpn (hit), account evicts printer, printer again is a miss: 4 embeddings for 5 searches.
    assert embedder.calls == 4


async def test_a_channel_only_gets_the_knowledge_bases_it_asks_for(
    docs: WriteFiles, tmp_path: Path, faiss_root: Path
) -> None:
    hr = docs(HR)
    it = tmp_path / "it"
    it.mkdir()
    for name, text in IT.items():
        (it / name).write_text(text, encoding="utf-8")
    await _ingest(faiss_root, hr, "hr-policies")
    await _ingest(faiss_root, it, "it-runbooks")
    retriever = retriever_for(faiss_root, HashingEmbedder())
    assert await retriever.knowledge_bases() == ["hr-policies", "it-runbooks"]

    only_hr = await retriever.search("How do I sign in to the VPN?", ["hr-policies"], 10)
    assert only_hr
    assert {p.kb for p in only_hr} == {"hr-policies"}
    both = await retriever.search("How do I sign in to the VPN?", ["hr-policies", "it-runbooks"], 3)
    assert both[0].kb == "it-runbooks"
    assert both[0].source == "vpn.md"
    assert [p.score for p in both] == sorted((p.score for p in both), reverse=True)
    assert all(0.0 <= p.score <= 1.0 for p in both)

    # One the store lacks (a worker without the shared volume): an admin's problem, named;
    # beside one it has, the other is still searched.
    where = rf"no-such-kb is not in .* {faiss_root} \(PARLEY_KNOWLEDGE_DIR\)"
    with pytest.raises(KnowledgeMisconfigured, match=where):
        await retriever.search("vpn", ["no-such-kb"], 3)
    partly = await retriever.search("vpn", ["no-such-kb", "it-runbooks"], 3)
    assert {p.kb for p in partly} == {"it-runbooks"}
    assert await retriever.search("vpn", ["../it-runbooks"], 3) == []
    assert await retriever.search("vpn", [], 3) == []
    assert await retriever.search("vpn", ["it-runbooks"], 0) == []
    assert await retriever.search("   ", ["it-runbooks"], 3) == []


async def test_bm25_matches_spanish_questions_to_spanish_passages_and_english_to_english(
    docs: WriteFiles, faiss_root: Path
) -> None:
    """With a dense signal that says nothing, the lexical half alone ranks: stemmed and
    accent-free terms of each language find their passages."""
    embedder = ConstantEmbedder()
    await _ingest(faiss_root, docs(HR), "hr", embedder)
    retriever = retriever_for(faiss_root, embedder)

    async def top(question: str) -> Passage:
        return (await retriever.search(question, ["hr"], 4))[0]

    assert (await top("¿Cuántos días de vacaciones puedo trasladar?")).source == "vacaciones.md"
    assert (await top("¿Cómo envío un informe de gastos?")).source == "gastos.md"
    assert (await top("How many vacation days carry over?")).source == "vacation.md"
    assert (await top("How do I submit an expense report?")).source == "expenses.md"
    # Inflected and unaccented forms still meet: trasladados/trasladar, dias/días.
    assert (await top("dias trasladados")).source == "vacaciones.md"
    # A question sharing no term with the documents scores below an answered one.
    unrelated = await top("¿Dónde está la cafetería?")
    answered = await top("¿Cuántos días de vacaciones puedo trasladar?")
    assert unrelated.score < answered.score


async def test_an_index_built_by_another_embedder_is_refused_clearly(
    docs: WriteFiles, faiss_root: Path
) -> None:
    await _ingest(faiss_root, docs(IT), "it", HashingEmbedder(64))
    retriever = retriever_for(faiss_root, HashingEmbedder(128))
    with pytest.raises(KnowledgeError, match="re-ingest it"):
        await retriever.search("vpn", ["it"], 3)
    # Another model of the same vector size is refused too: its vectors mean other things.
    retriever = retriever_for(faiss_root, ConstantEmbedder(64))
    with pytest.raises(KnowledgeError, match=r"built with hashing-64 .* is constant-64 \(64\)"):
        await retriever.search("vpn", ["it"], 3)


async def test_a_tei_server_may_be_reached_at_another_address_than_at_ingest(
    docs: WriteFiles, faiss_root: Path
) -> None:
    ingested, asking = CountingEmbedder(), CountingEmbedder()
    ingested.model_id, asking.model_id = "tei:http://127.0.0.1:8081", "tei:http://tei:80"
    await _ingest(faiss_root, docs(IT), "it", ingested)
    retriever = retriever_for(faiss_root, asking)
    assert (await retriever.search("GlobalProtect vpn", ["it"], 3))[0].source == "vpn.md"


async def test_preload_loads_every_knowledge_base_and_skips_a_broken_one(
    docs: WriteFiles,
    faiss_root: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No knowledge base yet: not even the model is loaded.
    idle = CountingEmbedder()
    assert await retriever_for(faiss_root, idle).preload() == []
    assert idle.calls == 0

    await _ingest(faiss_root, docs(IT), "it")
    await _ingest(faiss_root, docs(HR), "hr")
    await _ingest(faiss_root, docs(HR), "other", HashingEmbedder(64))  # another model
    embedder = CountingEmbedder()
    retriever = retriever_for(faiss_root, embedder)

    assert await retriever.preload() == ["hr", "it"]
    assert embedder.texts == ["warm-up"]  # the model loaded before any question
    assert "knowledge base other left out of every search" in caplog.text
    assert "re-ingest it" in caplog.text

    # A question now finds both loaded: nothing but the question is embedded, and the
    # broken knowledge base still says what is wrong with it.
    (found,) = await retriever.search("vacation days carry over", ["hr", "it"], 1)
    assert found.kb == "hr"
    assert embedder.texts == ["warm-up", "vacation days carry over"]
    with pytest.raises(KnowledgeMisconfigured, match="re-ingest it"):
        await retriever.search("vpn", ["other"], 1)
    # A channel that also uses the stale one is answered from the others, and the stale
    # one is not read again for every question.
    (found,) = await retriever.search("vacation days carry over", ["hr", "other"], 1)
    assert found.kb == "hr"
    loaded: list[str] = []
    load = retriever._load

    async def counted(kb: str) -> Loaded:
        loaded.append(kb)
        return await load(kb)

    monkeypatch.setattr(retriever, "_load", counted)
    await retriever.search("vpn please", ["other", "it"], 1)
    assert loaded == []


async def test_a_damaged_knowledge_base_is_left_out_until_it_is_restored(
    docs: WriteFiles, faiss_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _ingest(faiss_root, docs(IT), "it")
    await _ingest(faiss_root, docs(HR), "hr")
    store = FaissStore(faiss_root)
    generation = store.current("it")
    assert generation is not None
    backup = faiss_root.parent / "backup"
    shutil.copytree(faiss_root / "it" / generation, backup)
    shutil.rmtree(faiss_root / "it" / generation)  # a disk problem, a careless cleanup
    retriever = retriever_for(faiss_root, HashingEmbedder())
    monkeypatch.setattr(retriever_module, "RECHECK_REFUSED_SECONDS", 0.0)

    # The channel's other knowledge base still answers; alone, it is an admin's problem.
    found = await retriever.search("How do I sign in to the VPN?", ["hr", "it"], 3)
    assert {p.kb for p in found} == {"hr"}
    with pytest.raises(KnowledgeMisconfigured, match=r"'it' is damaged: .* Restore"):
        await retriever.search("How do I sign in to the VPN?", ["it"], 3)

    # Restored in place: the version is the same, so it is read again once the refusal
    # has run out (here at once) rather than only after a restart.
    shutil.copytree(backup, faiss_root / "it" / generation)
    found = await retriever.search("How do I sign in to the VPN?", ["hr", "it"], 1)
    assert [p.kb for p in found] == ["it"]
