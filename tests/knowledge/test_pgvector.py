"""Knowledge bases in the real PostgreSQL with pgvector: ingest, search, reload, atomicity."""

from __future__ import annotations

import pytest

from knowledge.base import EmbeddingError, KnowledgeMisconfigured, StoreUnavailable
from knowledge.embeddings import HashingEmbedder
from knowledge.ingest import ingest_folder
from knowledge.pgvector_store import PgRetriever, PgStore, redact_url
from knowledge.store import Change, ConcurrentIngest
from tests.fakes.embedders import CountingEmbedder, FailingEmbedder
from tests.knowledge.conftest import WriteFiles
from tests.knowledge.pdf import make_pdf
from tests.support.postgres import PG_URL

CORPUS: dict[str, str | bytes] = {
    "vacation.md": "# Vacation policy\n\n## Carry-over\n\nUp to five unused vacation days carry "
    "over into the next year.\n",
    "vacaciones.md": "# Vacaciones\n\n## Traslado\n\nSe pueden trasladar cinco días al año "
    "siguiente.\n",
    "vpn.html": "<title>VPN</title><h2>Client</h2><p>Install GlobalProtect from the portal.</p>",
    "travel.pdf": make_pdf([["Meals are reimbursed up to 60 euros per day."]], title="Travel"),
    "broken.pdf": b"%PDF-1.4 nothing",
}


async def test_ingest_search_and_reingest_in_postgresql(docs: WriteFiles, pg_schema: str) -> None:
    folder = docs(CORPUS)
    store = PgStore(PG_URL, schema=pg_schema)
    report = await ingest_folder(folder, "handbook", store=store, embedder=HashingEmbedder())
    assert report.added == ["travel.pdf", "vacaciones.md", "vacation.md", "vpn.html"]
    assert [s.source for s in report.skipped] == ["broken.pdf"]
    assert report.committed
    assert report.version == "1"
    assert report.chunks_total == 4

    embedder = CountingEmbedder()
    retriever = PgRetriever(
        PG_URL, embedder, schema=pg_schema, dense_languages=("en", "es"), translate_words=False
    )
    try:
        assert await retriever.knowledge_bases() == ["handbook"]
        (top,) = await retriever.search("How many vacation days carry over?", ["handbook"], 1)
        assert (top.title, top.section, top.source) == ("Vacation policy", "Carry-over",
                                                        "vacation.md")  # fmt: skip
        (es,) = await retriever.search("¿Cuántos días puedo trasladar?", ["handbook"], 1)
        assert es.source == "vacaciones.md"
        (pdf,) = await retriever.search("meals euros per day", ["handbook"], 1)
        assert (pdf.source, pdf.section) == ("travel.pdf", "Page 1")
        # A knowledge base this store lacks: the admin is told where the worker looked.
        with pytest.raises(KnowledgeMisconfigured, match=r"other is not .* PostgreSQL at "):
            await retriever.search("vpn", ["other"], 3)
        assert await retriever.search("vpn", ["other", "handbook"], 1) != []

        # Unchanged: nothing embedded, nothing committed.
        counting = CountingEmbedder()
        same = await ingest_folder(folder, "handbook", store=store, embedder=counting)
        assert not same.committed
        assert counting.texts == []
        assert same.version == "1"

        # One file edited, one deleted: the running retriever sees it on its next search.
        docs({"vacation.md": "# Vacation policy\n\n## Carry-over\n\nUp to ten days carry over.\n"})
        (folder / "vpn.html").unlink()
        counting = CountingEmbedder()
        changed = await ingest_folder(folder, "handbook", store=store, embedder=counting)
        assert changed.updated == ["vacation.md"]
        assert changed.removed == ["vpn.html"]
        assert len(counting.texts) == 1
        assert changed.version == "2"
        (top,) = await retriever.search("How many vacation days carry over?", ["handbook"], 1)
        assert "ten days" in top.text
        found = await retriever.search("Install GlobalProtect", ["handbook"], 4)
        assert all(p.source != "vpn.html" for p in found)
        calls = embedder.calls
        await retriever.search("How many vacation days carry over?", ["handbook"], 1)
        assert embedder.calls == calls  # cached for this version

        # Published on the intranet: a new version whose sources are links.
        base = "https://intranet.acme.example/handbook"
        linked = await ingest_folder(folder, "handbook", store=store, embedder=embedder,
                                     link_base=base)  # fmt: skip
        assert linked.version == "3"
        assert (await store.manifest("handbook")).link_base == base  # type: ignore[union-attr]
        (top,) = await retriever.search("How many vacation days carry over?", ["handbook"], 1)
        assert top.url == f"{base}/vacation.md"
    finally:
        await retriever.aclose()


async def test_a_failing_ingest_changes_nothing_in_postgresql(
    docs: WriteFiles, pg_schema: str
) -> None:
    folder = docs({"a.md": "# A\n\nThe printer code is 4711.\n"})
    store = PgStore(PG_URL, schema=pg_schema)
    await ingest_folder(folder, "kb", store=store, embedder=HashingEmbedder())
    docs({"a.md": "# A\n\nThe printer code is 4712.\n", "b.md": "# B\n\nMore.\n"})
    with pytest.raises(EmbeddingError):
        await ingest_folder(folder, "kb", store=store, embedder=FailingEmbedder(allowed=0))
    manifest = await store.manifest("kb")
    assert manifest is not None
    assert manifest.version == "1"
    assert set(manifest.sources) == {"a.md"}
    retriever = PgRetriever(PG_URL, HashingEmbedder(), schema=pg_schema)
    try:
        (top,) = await retriever.search("printer code", ["kb"], 1)
        assert "4711" in top.text
    finally:
        await retriever.aclose()

    stale = Change(manifest=manifest, replaced=frozenset({"a.md"}), base_version="0")
    with pytest.raises(ConcurrentIngest):
        await store.commit("kb", stale)
    assert (await store.manifest("kb")).version == "1"  # type: ignore[union-attr]


async def test_an_unreachable_database_is_named_without_its_password() -> None:
    url = "postgresql://parley:hunter2@127.0.0.1:9/parley"
    assert redact_url(url) == "postgresql://parley:***@127.0.0.1:9/parley"
    with pytest.raises(StoreUnavailable, match=r"127\.0\.0\.1:9") as caught:
        await PgStore(url).manifest("kb")
    assert "hunter2" not in str(caught.value)
