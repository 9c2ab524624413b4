"""Embedders: the hashing one for tests, TEI over real HTTP, and the packaged MiniLM."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from knowledge.base import DEFAULT_MIN_SCORE, EmbeddingError, KnowledgeMisconfigured
from knowledge.embeddings import HashingEmbedder, LocalEmbedder, TeiEmbedder, model_dimension
from knowledge.faiss_store import FaissRetriever, FaissStore
from knowledge.ingest import ingest_folder
from tests.fakes.tei import FakeTEI
from tests.support.processes import free_port


def _norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_hashing_embedder_is_deterministic_and_normalized() -> None:
    embedder = HashingEmbedder(64)
    first, second, empty = await embedder.embed(["Reset your password", "reset your PASSWORD", ""])
    assert first == second  # case does not matter; same text, same vector in every process
    assert len(first) == 64
    assert _norm(first) == pytest.approx(1.0)
    assert _norm(empty) == pytest.approx(1.0)
    near, far = await embedder.embed(["How do I reset a password?", "Parental leave in Spain"])
    assert _cosine(first, near) > _cosine(first, far)


@pytest.fixture
def tei() -> Iterator[FakeTEI]:
    server = FakeTEI(dimension=64, max_batch=4)
    server.start()
    yield server
    server.stop()


async def test_tei_embedder_batches_and_asks_for_normalized_vectors(tei: FakeTEI) -> None:
    embedder = TeiEmbedder(tei.url, dimension=64, batch_size=4)
    texts = [f"text number {i}" for i in range(10)]
    vectors = await embedder.embed(texts)
    assert len(vectors) == 10
    assert vectors == await HashingEmbedder(64).embed(texts)
    assert [len(r["inputs"]) for r in tei.requests] == [4, 4, 2]
    assert all(r["normalize"] is True and r["truncate"] is True for r in tei.requests)
    assert await embedder.embed([]) == []


async def test_tei_embedder_retries_an_overloaded_server(tei: FakeTEI) -> None:
    tei.fail_next = [503, 429]
    embedder = TeiEmbedder(tei.url, dimension=64, retry_delay=0.01)
    assert len(await embedder.embed(["hello"])) == 1
    assert len(tei.requests) == 3


async def test_tei_embedder_gives_up_with_a_short_clear_error(tei: FakeTEI) -> None:
    embedder = TeiEmbedder(tei.url, dimension=64, batch_size=8, retry_delay=0.01)
    with pytest.raises(EmbeddingError, match=r"HTTP 413: .*maximum allowed batch size 4"):
        await embedder.embed([str(i) for i in range(8)])
    assert len(tei.requests) == 1  # a refused request is not retried
    tei.dimension_override = 32
    with pytest.raises(
        EmbeddingError, match="32-dimensional vectors; PARLEY_TEI_DIMENSION says 64"
    ):
        await embedder.embed(["x"])
    unreachable = TeiEmbedder("http://127.0.0.1:9", dimension=64, retries=1, retry_delay=0.01)
    with pytest.raises(
        EmbeddingError, match=r"the embeddings server at http://127\.0\.0\.1:9 failed"
    ):
        await unreachable.embed(["x"])


async def test_a_tei_server_is_known_by_the_model_it_serves_not_its_address(
    tei: FakeTEI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "vpn.md").write_text("# VPN\n\nUse GlobalProtect.\n", encoding="utf-8")
    store = FaissStore(tmp_path / "kb")
    embedder = TeiEmbedder(tei.url, dimension=64)
    await ingest_folder(folder, "it", store=store, embedder=embedder)
    manifest = await store.manifest("it")
    assert manifest is not None
    assert manifest.embedder == "tei:acme/hashing"

    # Workers reach the same model through another address: it is searched.
    same = FakeTEI(dimension=64)
    with same:
        found = await FaissRetriever(tmp_path / "kb", TeiEmbedder(same.url, dimension=64)).search(
            "vpn client", ["it"], 1
        )
        assert [p.source for p in found] == ["vpn.md"]
    # Another model of the same size: its vectors would be meaningless next to these.
    other = FakeTEI(dimension=64, model_id="acme/other-model")
    with other:
        retriever = FaissRetriever(tmp_path / "kb", TeiEmbedder(other.url, dimension=64))
        refused = r"built with tei:acme/hashing .* re-ingest"
        with pytest.raises(KnowledgeMisconfigured, match=refused):
            await retriever.search("vpn client", ["it"], 1)
    # A server that does not say (an older TEI): known by its size alone, and logged.
    silent = FakeTEI(dimension=64, model_id=None)
    with silent:
        embedder = TeiEmbedder(silent.url, dimension=64)
        found = await FaissRetriever(tmp_path / "kb", embedder).search("vpn client", ["it"], 1)
        assert [p.source for p in found] == ["vpn.md"]
        assert embedder.model_id == f"tei:{silent.url}"
    assert f"the embeddings server at {silent.url} does not say which model" in caplog.text


async def test_a_tei_server_is_asked_its_model_once_and_again_after_a_failure(
    tei: FakeTEI,
) -> None:
    embedder = TeiEmbedder(tei.url, dimension=64)
    # Knowledge bases loading at once all wait for the one answer.
    await asyncio.gather(*(embedder.identify() for _ in range(5)))
    assert embedder.model_id == "tei:acme/hashing"
    assert tei.info_requests == 1
    # Unreachable: an error now (nothing is let through on its size), a new ask next time.
    port = free_port()
    later = TeiEmbedder(f"http://127.0.0.1:{port}", dimension=64, timeout=2)
    with pytest.raises(EmbeddingError, match=f"127.0.0.1:{port} failed"):
        await later.identify()
    later.url = tei.url
    await later.identify()
    assert later.model_id == "tei:acme/hashing"


async def test_a_server_that_is_not_tei_is_named_at_once(tei: FakeTEI) -> None:
    tei.web_page = True
    embedder = TeiEmbedder(tei.url, dimension=64, retry_delay=0.01)
    with pytest.raises(EmbeddingError, match="not JSON: is PARLEY_TEI_URL a TEI server"):
        await embedder.embed(["x"])
    assert len(tei.requests) == 1  # a wrong address is not retried


def test_a_folder_that_is_no_sentence_transformers_model_is_named(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingError, match="not a sentence-transformers model folder"):
        model_dimension(tmp_path)


EN_ES_CORPUS = {
    "vacation.md": "# Vacation policy\n\n## Carry-over\n\nYou may carry over up to five unused "
    "vacation days into the next calendar year. Carried-over days expire on March 31.\n",
    "vpn.md": "# Connecting to the VPN\n\nOpen the GlobalProtect client, enter the portal "
    "vpn.example.com and sign in with your company account and your MFA code.\n",
    "vacaciones.md": "# Política de vacaciones\n\n## Traslado de días\n\nSe pueden trasladar "
    "hasta cinco días de vacaciones no disfrutados al año siguiente. Caducan el 31 de marzo.\n",
    "impresora.md": "# Configurar la impresora\n\nPara añadir la impresora de la planta, abre "
    "Configuración > Impresoras y elige PRN-PLANTA2. Los trabajos se retienen hasta que "
    "acercas tu tarjeta al lector.\n",
}


async def test_the_packaged_model_loads_and_ranks_english_and_spanish(tmp_path: Path) -> None:
    """The one test that loads the real all-MiniLM-L6-v2 (a few seconds)."""
    embedder = LocalEmbedder()
    assert embedder.dimension == 384
    vector, other = await embedder.embed(["How do I reset my password?", "Parental leave"])
    assert len(vector) == 384
    assert _norm(vector) == pytest.approx(1.0, abs=1e-4)
    assert _cosine(vector, other) < 0.5

    folder = tmp_path / "docs"
    folder.mkdir()
    for name, text in EN_ES_CORPUS.items():
        (folder / name).write_text(text, encoding="utf-8")
    store = FaissStore(tmp_path / "index")
    report = await ingest_folder(folder, "handbook", store=store, embedder=embedder)
    assert report.chunks_total == 4
    retriever = FaissRetriever(tmp_path / "index", embedder)  # the model knows English only

    async def best(question: str) -> tuple[str, float]:
        top = (await retriever.search(question, ["handbook"], 3))[0]
        return top.source, top.score

    source, score = await best("How many vacation days can I carry over to next year?")
    assert source == "vacation.md"
    assert score >= DEFAULT_MIN_SCORE
    source, score = await best("¿Cuántos días de vacaciones puedo trasladar al año siguiente?")
    assert source == "vacaciones.md"
    assert score >= DEFAULT_MIN_SCORE
    source, score = await best("¿Cómo añado la impresora de la planta?")
    assert source == "impresora.md"
    assert score >= DEFAULT_MIN_SCORE
    source, score = await best("How do I connect to the VPN?")
    assert source == "vpn.md"
    assert score >= DEFAULT_MIN_SCORE
    # Questions the documents do not answer stay below the threshold.
    assert (await best("Can I bring my dog to the office?"))[1] < DEFAULT_MIN_SCORE
    assert (await best("¿Dónde está la cafetería?"))[1] < DEFAULT_MIN_SCORE
