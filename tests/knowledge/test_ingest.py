"""Ingest into FAISS on disk: every file type, bad files, changes, deletions, atomicity."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from knowledge.base import EmbeddingError, KnowledgeError
from knowledge.documents import MAX_FILE_BYTES
from knowledge.embeddings import HashingEmbedder
from knowledge.faiss_store import CURRENT, FaissStore
from knowledge.ingest import Progress, ingest_folder
from knowledge.store import Change, ConcurrentIngest
from tests.fakes.embedders import CountingEmbedder, FailingEmbedder
from tests.knowledge.conftest import WriteFiles, retriever_for
from tests.knowledge.pdf import make_pdf

CORPUS: dict[str, str | bytes] = {
    "vacation.md": "# Vacation policy\n\n## Carry-over\n\nUp to five unused vacation days carry "
    "over into the next year.\n\n## Requests\n\nRequest time off in Workday two weeks ahead.\n",
    "it/vpn.html": "<title>VPN setup</title><h2>Client</h2><p>Install GlobalProtect from the "
    "Company Portal.</p>",
    "it/lost-devices.txt": "Report a lost laptop to security within 24 hours.\n",
    "travel.pdf": make_pdf([["Meals are reimbursed up to 60 euros per day."]], title="Travel"),
    "notes/.hidden.md": "# Secret\n\nnot ingested\n",
    "diagram.png": b"\x89PNG\r\n",
}


async def test_every_file_type_is_ingested_and_found_with_its_citation(
    docs: WriteFiles, store: FaissStore, faiss_root: Path
) -> None:
    folder = docs(CORPUS)
    seen: list[Progress] = []
    report = await ingest_folder(
        folder, "handbook", store=store, embedder=HashingEmbedder(), progress=seen.append
    )
    assert report.added == ["it/lost-devices.txt", "it/vpn.html", "travel.pdf", "vacation.md"]
    assert [(s.source, s.reason) for s in report.skipped] == [
        ("diagram.png", "unsupported file type .png")
    ]
    assert report.committed
    assert report.chunks_total == report.chunks_added == 5
    assert not report.nothing_read
    stages = [p.stage for p in seen]
    assert stages[0] == "reading"
    assert stages[-1] == "done"
    assert {"embedding", "writing"} <= set(stages)
    assert seen[-2] == Progress("writing", 1, 1)

    retriever = retriever_for(faiss_root, HashingEmbedder())
    assert await retriever.knowledge_bases() == ["handbook"]
    (top,) = await retriever.search("How many vacation days carry over?", ["handbook"], 1)
    assert (top.kb, top.title, top.section, top.source) == (
        "handbook", "Vacation policy", "Carry-over", "vacation.md",
    )  # fmt: skip
    assert top.text.startswith("Up to five unused vacation days")
    (pdf,) = await retriever.search("meals reimbursed euros per day", ["handbook"], 1)
    assert (pdf.source, pdf.title, pdf.section) == ("travel.pdf", "Travel", "Page 1")
    (html,) = await retriever.search("install GlobalProtect", ["handbook"], 1)
    assert (html.source, html.title, html.section) == ("it/vpn.html", "VPN setup", "Client")


async def test_bad_files_are_reported_by_name_and_skipped(
    docs: WriteFiles, store: FaissStore
) -> None:
    folder = docs(
        {
            "good.md": "# Good\n\nReadable text.\n",
            "empty.md": "",
            "latin1.txt": "Días de vacaciones".encode("latin-1"),
            "broken.pdf": b"%PDF-1.7\n1 0 obj <<",
        }
    )
    report = await ingest_folder(folder, "kb", store=store, embedder=HashingEmbedder())
    assert report.added == ["good.md"]
    reasons = {s.source: s.reason for s in report.skipped}
    assert set(reasons) == {"broken.pdf", "empty.md", "latin1.txt"}
    assert reasons["empty.md"] == "empty"
    assert reasons["latin1.txt"].startswith("not valid UTF-8 text")
    assert reasons["broken.pdf"].startswith("unreadable PDF")


async def test_reingest_touches_only_what_changed_and_removes_what_was_deleted(
    docs: WriteFiles, store: FaissStore, faiss_root: Path
) -> None:
    folder = docs(CORPUS)
    first = await ingest_folder(folder, "kb", store=store, embedder=HashingEmbedder())
    before = {c.source: c.chunk_id for c in store.load("kb").chunks}  # type: ignore[union-attr]

    again = CountingEmbedder()
    same = await ingest_folder(folder, "kb", store=store, embedder=again)
    assert same.unchanged == first.added
    assert not same.committed
    assert again.texts == []
    assert same.version == first.version

    docs({"vacation.md": "# Vacation policy\n\n## Carry-over\n\nUp to ten days carry over.\n"})
    (folder / "it" / "lost-devices.txt").unlink()
    counting = CountingEmbedder()
    report = await ingest_folder(folder, "kb", store=store, embedder=counting)
    assert report.updated == ["vacation.md"]
    assert report.removed == ["it/lost-devices.txt"]
    assert report.unchanged == ["it/vpn.html", "travel.pdf"]
    assert report.added == []
    assert len(counting.texts) == 1
    assert "Up to ten days" in counting.texts[0]
    assert report.chunks_added == 1
    assert report.chunks_removed == 3
    assert report.chunks_total == 3
    assert report.version != first.version

    after = {c.source: c.chunk_id for c in store.load("kb").chunks}  # type: ignore[union-attr]
    assert "it/lost-devices.txt" not in after
    assert after["travel.pdf"] == before["travel.pdf"]  # untouched chunks keep their ids
    retriever = retriever_for(faiss_root, HashingEmbedder())
    found = await retriever.search("lost laptop security", ["kb"], 5)
    assert all(p.source != "it/lost-devices.txt" for p in found)


async def test_a_previously_indexed_file_that_turns_bad_keeps_its_old_version(
    docs: WriteFiles, store: FaissStore, faiss_root: Path
) -> None:
    folder = docs({"a.md": "# A\n\nThe printer code is 4711.\n", "b.md": "# B\n\nOther.\n"})
    await ingest_folder(folder, "kb", store=store, embedder=HashingEmbedder())
    docs({"a.md": "The printer code is 4712.".encode("utf-16")})
    report = await ingest_folder(folder, "kb", store=store, embedder=HashingEmbedder())
    (skipped,) = report.skipped
    assert skipped.source == "a.md"
    assert skipped.kept_previous
    assert report.removed == []
    assert report.chunks_total == 2
    found = await retriever_for(faiss_root, HashingEmbedder()).search("printer code", ["kb"], 1)
    assert "4711" in found[0].text


async def test_when_nothing_can_be_read_nothing_changes(
    docs: WriteFiles, store: FaissStore, tmp_path: Path
) -> None:
    folder = docs({"a.md": "# A\n\nText.\n"})
    first = await ingest_folder(folder, "kb", store=store, embedder=HashingEmbedder())
    empty = tmp_path / "unmounted"
    empty.mkdir()
    report = await ingest_folder(empty, "kb", store=store, embedder=HashingEmbedder())
    assert report.nothing_read
    assert not report.committed
    assert report.removed == []
    assert store.current("kb") == first.version
    assert report.chunks_total == 1
    with pytest.raises(KnowledgeError, match="is not a folder"):
        await ingest_folder(tmp_path / "missing", "kb", store=store, embedder=HashingEmbedder())
    with pytest.raises(KnowledgeError, match="is not a knowledge base name"):
        await ingest_folder(folder, "../etc", store=store, embedder=HashingEmbedder())


async def test_a_failing_ingest_leaves_the_old_index_whole_and_usable(
    docs: WriteFiles, store: FaissStore, faiss_root: Path
) -> None:
    folder = docs(CORPUS)
    first = await ingest_folder(folder, "kb", store=store, embedder=HashingEmbedder())
    retriever = retriever_for(faiss_root, HashingEmbedder())
    before = await retriever.search("vacation days", ["kb"], 3)

    docs({f"new-{i}.md": f"# New {i}\n\nFresh text number {i}.\n" for i in range(100)})
    with pytest.raises(EmbeddingError):
        await ingest_folder(folder, "kb", store=store, embedder=FailingEmbedder(allowed=64))
    assert store.current("kb") == first.version
    assert [p.name for p in (faiss_root / "kb").iterdir() if p.name.startswith(".tmp")] == []
    retriever.cache.size = 0  # ask the index itself, not the cache
    assert await retriever.search("vacation days", ["kb"], 3) == before

    # A crash while writing the generation leaves a temporary folder; the next commit clears it.
    stale = faiss_root / "kb" / ".tmp-crashed"
    stale.mkdir()
    report = await ingest_folder(folder, "kb", store=store, embedder=HashingEmbedder())
    assert report.committed
    assert not stale.exists()
    generations = [p for p in (faiss_root / "kb").iterdir() if p.is_dir()]
    assert len(generations) == 2  # the live one and the one before, for readers mid-load


async def test_commits_based_on_a_stale_version_are_refused(
    docs: WriteFiles, store: FaissStore
) -> None:
    folder = docs({"a.md": "# A\n\nText.\n"})
    await ingest_folder(folder, "kb", store=store, embedder=HashingEmbedder())
    manifest = await store.manifest("kb")
    assert manifest is not None
    stale = Change(manifest=manifest, replaced=frozenset(), base_version="an-older-version")
    with pytest.raises(ConcurrentIngest, match="run it again"):
        await store.commit("kb", stale)


async def test_concurrent_ingests_of_one_knowledge_base_do_not_corrupt_it(
    docs: WriteFiles, store: FaissStore, faiss_root: Path
) -> None:
    folder = docs({f"doc-{i}.md": f"# Doc {i}\n\nBody {i}.\n" for i in range(20)})
    results = await asyncio.gather(
        *(ingest_folder(folder, "kb", store=store, embedder=HashingEmbedder()) for _ in range(3)),
        return_exceptions=True,
    )
    assert any(not isinstance(r, BaseException) for r in results)
    assert all(not isinstance(r, BaseException) or isinstance(r, ConcurrentIngest) for r in results)
    generation = store.load("kb")
    assert generation is not None
    assert len(generation.chunks) == 20
    assert (faiss_root / "kb" / CURRENT).read_text().strip() == generation.name


async def test_another_embedder_re_embeds_everything(docs: WriteFiles, store: FaissStore) -> None:
    folder = docs({"a.md": "# A\n\nText a.\n", "b.md": "# B\n\nText b.\n"})
    await ingest_folder(folder, "kb", store=store, embedder=HashingEmbedder(64))
    counting = CountingEmbedder(HashingEmbedder(128))
    report = await ingest_folder(folder, "kb", store=store, embedder=counting)
    assert report.updated == ["a.md", "b.md"]
    assert len(counting.texts) == 2
    manifest = await store.manifest("kb")
    assert manifest is not None
    assert manifest.dimension == 128
    assert manifest.embedder == "hashing-128"


async def test_a_file_whose_name_is_not_utf8_is_skipped_and_the_rest_ingested(
    docs: WriteFiles, store: FaissStore
) -> None:
    folder = docs({"good.md": "# Good\n\nReadable text.\n"})
    for name in (b"caf\xe9.md", b"caf\xe9.png"):  # Latin-1 names, as an old share may hold
        fd = os.open(os.fsencode(folder) + b"/" + name, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, b"# Cafe\n\nCoffee is free.\n")
        os.close(fd)
    report = await ingest_folder(folder, "kb", store=store, embedder=HashingEmbedder())
    assert report.added == ["good.md"]
    assert report.committed
    assert [(s.source, s.reason) for s in report.skipped] == [
        ("caf\\xe9.png", "unsupported file type .png"),
        ("caf\\xe9.md", "its name is not valid UTF-8: rename it"),
    ]


async def test_a_subfolder_that_cannot_be_listed_keeps_its_documents(
    docs: WriteFiles, store: FaissStore, faiss_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = docs(
        {
            "a.md": "# A\n\nText a.\n",
            "it/vpn.md": "# VPN\n\nInstall GlobalProtect.\n",
            "it/wifi/guest.md": "# Guest wifi\n\nThe password is on the board.\n",
        }
    )
    await ingest_folder(folder, "kb", store=store, embedder=HashingEmbedder())
    docs({"a.md": "# A\n\nText a, changed.\n", "new/b.md": "# B\n\nText b.\n"})
    # As for a folder this user may not read (root may read any: fail the listing itself).
    blocked = {os.fspath(folder / "it"), os.fspath(folder / "new")}
    listing = os.scandir

    def scandir(path: str) -> Any:
        if os.fspath(path) in blocked:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return listing(path)

    monkeypatch.setattr(os, "scandir", scandir)
    report = await ingest_folder(folder, "kb", store=store, embedder=HashingEmbedder())
    monkeypatch.undo()
    assert report.updated == ["a.md"]
    assert report.removed == []
    denied = "could not be listed (Permission denied)"
    assert [(s.source, s.reason, s.kept_previous) for s in report.skipped] == [
        ("it/vpn.md", f"folder it {denied}", True),
        ("it/wifi/guest.md", f"folder it {denied}", True),
        ("new/", f"folder new {denied}", False),
    ]
    assert report.chunks_total == 3
    manifest = await store.manifest("kb")
    assert manifest is not None
    assert sorted(manifest.sources) == ["a.md", "it/vpn.md", "it/wifi/guest.md"]
    (found,) = await retriever_for(faiss_root, HashingEmbedder()).search(
        "install GlobalProtect", ["kb"], 1
    )
    assert found.source == "it/vpn.md"


async def test_a_file_over_the_size_cap_is_skipped_unread_and_keeps_its_old_version(
    docs: WriteFiles, store: FaissStore, faiss_root: Path
) -> None:
    folder = docs({"a.md": "# A\n\nThe printer code is 4711.\n", "b.md": "# B\n\nOther.\n"})
    await ingest_folder(folder, "kb", store=store, embedder=HashingEmbedder())
    docs({"dump.txt": "A log.\n"})
    for name in ("a.md", "dump.txt"):  # sparse: large on paper, next to nothing written
        os.truncate(folder / name, MAX_FILE_BYTES + 2**20)
    report = await ingest_folder(folder, "kb", store=store, embedder=HashingEmbedder())
    too_large = "too large (51.0 MiB; the limit is 50 MiB)"
    assert [(s.source, s.reason, s.kept_previous) for s in report.skipped] == [
        ("a.md", too_large, True),
        ("dump.txt", too_large, False),
    ]
    assert report.unchanged == ["b.md"]
    assert report.removed == []
    (found,) = await retriever_for(faiss_root, HashingEmbedder()).search("printer code", ["kb"], 1)
    assert "4711" in found.text


def test_the_manifest_is_utf8_whatever_the_locale(faiss_root: Path, store: FaissStore) -> None:
    # A writer in the C locale (an ASCII one, as in a bare container) and a UTF-8 reader.
    write = (
        "import locale, sys\n"
        "from knowledge.faiss_store import FaissStore\n"
        "from knowledge.store import Change, Manifest, SourceEntry, StoredChunk\n"
        "print(locale.getencoding())\n"
        "source = 'pol\\u00edtica/d\\u00edas.md'\n"
        "chunk = StoredChunk('c1', source, 0, 'D\\u00edas', '', 'Cinco d\\u00edas.')\n"
        "manifest = Manifest('hashing-4', 4, {source: SourceEntry('0' * 64, ('c1',))})\n"
        "change = Change(manifest, frozenset({source}), [(chunk, [1.0, 0.0, 0.0, 0.0])])\n"
        "FaissStore(sys.argv[1]).write('kb', change)\n"
    )
    c_locale = {"LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    done = subprocess.run(
        [sys.executable, "-c", write, str(faiss_root)],
        cwd=Path(__file__).parents[2],
        env={**os.environ, **c_locale},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    if "utf" in done.stdout.lower().replace("-", ""):
        pytest.skip(f"this platform's C locale is {done.stdout.strip()}")
    manifest = store.read_manifest("kb")
    assert manifest is not None
    assert list(manifest.sources) == ["pol\u00edtica/d\u00edas.md"]


async def test_a_current_naming_a_missing_generation_says_the_knowledge_base_is_damaged(
    docs: WriteFiles, store: FaissStore, faiss_root: Path
) -> None:
    folder = docs({"a.md": "# A\n\nText.\n"})
    first = await ingest_folder(folder, "kb", store=store, embedder=HashingEmbedder())
    assert first.version is not None
    kb_dir = faiss_root / "kb"
    shutil.rmtree(kb_dir / first.version)
    damaged = (
        f"knowledge base 'kb' is damaged: its CURRENT file names the folder "
        f"{kb_dir / first.version}, which does not exist. Restore {kb_dir} from a backup, or "
        f"delete {kb_dir} and ingest the knowledge base again"
    )
    with pytest.raises(KnowledgeError) as loading:  # a worker
        store.load("kb")
    assert str(loading.value) == damaged
    with pytest.raises(KnowledgeError) as ingesting:
        await ingest_folder(folder, "kb", store=store, embedder=HashingEmbedder())
    assert str(ingesting.value) == damaged

    shutil.rmtree(kb_dir)  # as the message says
    assert (await ingest_folder(folder, "kb", store=store, embedder=HashingEmbedder())).committed
    second = store.current("kb")
    assert second is not None
    (kb_dir / second / "chunks.jsonl").unlink()
    with pytest.raises(KnowledgeError, match=r"is damaged: .*/chunks\.jsonl is missing\. Restore"):
        store.load("kb")


async def test_a_reader_whose_generation_was_pruned_meanwhile_reads_the_live_one(
    docs: WriteFiles, store: FaissStore, faiss_root: Path
) -> None:
    folder = docs({"a.md": "# A\n\nVersion 1.\n"})
    first = await ingest_folder(folder, "kb", store=store, embedder=HashingEmbedder())
    for version in (2, 3):  # the second commit after `first` prunes it
        docs({"a.md": f"# A\n\nVersion {version}.\n"})
        last = await ingest_folder(folder, "kb", store=store, embedder=HashingEmbedder())
    assert first.version is not None
    assert not (faiss_root / "kb" / first.version).exists()

    class LateReader(FaissStore):
        """Read CURRENT just before those two commits."""

        stale: str | None = first.version

        def current(self, kb: str) -> str | None:
            name, self.stale = self.stale, None
            return name or super().current(kb)

    generation = LateReader(faiss_root).load("kb")
    assert generation is not None
    assert generation.name == last.version
    assert "Version 3." in generation.chunks[0].text


async def test_a_published_folder_makes_its_sources_links_until_told_otherwise(
    docs: WriteFiles, store: FaissStore, faiss_root: Path
) -> None:
    folder = docs({"vacation policy.md": "# Vacation\n\nFive unused days carry over.\n"})
    embedder = CountingEmbedder()
    base = "https://intranet.acme.example/hr/"
    await ingest_folder(folder, "hr", store=store, embedder=embedder, link_base=base)
    retriever = retriever_for(faiss_root, embedder)
    (found,) = await retriever.search("unused days carry over", ["hr"], 1)
    assert found.url == "https://intranet.acme.example/hr/vacation%20policy.md"

    # Kept by a re-ingest that does not name it; a change of address alone is committed and
    # reaches running workers, with nothing embedded again.
    kept = await ingest_folder(folder, "hr", store=store, embedder=embedder)
    assert not kept.committed
    embedded = len(embedder.texts)
    moved = await ingest_folder(
        folder, "hr", store=store, embedder=embedder, link_base="https://wiki.acme.example/HR"
    )
    assert moved.committed
    assert len(embedder.texts) == embedded
    (found,) = await retriever.search("unused days carry over?", ["hr"], 1)
    assert found.url == "https://wiki.acme.example/HR/vacation%20policy.md"
    await ingest_folder(folder, "hr", store=store, embedder=embedder, link_base="")
    (found,) = await retriever.search("how many unused days carry over", ["hr"], 1)
    assert found.url == ""

    with pytest.raises(KnowledgeError, match="not a web address for the documents"):
        await ingest_folder(folder, "hr", store=store, embedder=embedder, link_base="intranet/hr")
