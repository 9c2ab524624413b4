"""`parley ingest`: the summary, the exit status, the progress bar; the Knowledge settings."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from knowledge.embeddings import HashingEmbedder, LocalEmbedder, TeiEmbedder
from knowledge.factory import create_embedder, create_retriever, create_store
from knowledge.faiss_store import FaissRetriever, FaissStore
from knowledge.ingest import Progress
from knowledge.pgvector_store import PgRetriever, PgStore
from knowledge.ranking import MINILM, USE
from knowledge.use_embedder import UseEmbedder
from parley.cli import main
from parley.knowledge_cli import ProgressBar
from parley.settings import SettingsError, load_settings
from tests.knowledge.conftest import WriteFiles
from tests.support.postgres import PG_URL


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    index = tmp_path / "index"
    monkeypatch.setenv("PARLEY_KNOWLEDGE_DIR", str(index))
    monkeypatch.setenv("PARLEY_EMBEDDINGS", "hashing")
    monkeypatch.delenv("PARLEY_ENCRYPTION_KEY", raising=False)  # ingest needs none
    return index


def test_ingest_prints_a_summary_and_succeeds_despite_bad_files(
    env: Path, docs: WriteFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = docs(
        {
            "vacation.md": "# Vacation\n\nFive days carry over.\n",
            "vpn.txt": "Use GlobalProtect.\n",
            "broken.pdf": b"%PDF-1.4 no",
            "empty.md": "",
        }
    )
    assert main(["ingest", str(folder), "--kb", "hr-policies"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == (
        "hr-policies: 2 files read (2 added, 0 updated, 0 unchanged), 0 removed, 2 skipped"
    )
    assert "  chunks: 2 added, 0 removed, 2 in the knowledge base" in out
    assert "  added: vacation.md, vpn.txt" in out
    assert "  skipped broken.pdf: unreadable PDF" in out
    assert "  skipped empty.md: empty" in out
    assert "reading (4)" in err
    assert "embedding (2)" in err
    assert (env / "hr-policies" / "CURRENT").is_file()

    (folder / "vpn.txt").unlink()
    assert main(["ingest", str(folder), "--kb", "hr-policies", "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "  removed: vpn.txt" in out
    assert err == ""


def test_ingest_publishes_the_sources_at_a_web_address(
    env: Path, docs: WriteFiles, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = docs({"vacation.md": "# Vacation\n\nFive days carry over.\n"})
    base = "https://intranet.acme.example/hr"
    assert main(["ingest", str(folder), "--kb", "hr", "--quiet", "--link-base", base + "/"]) == 0
    assert f"  sources link to {base}\n" in capsys.readouterr().out
    assert main(["ingest", str(folder), "--kb", "hr", "--quiet", "--link-base", "intranet"]) == 2
    assert "'intranet' is not a web address for the documents" in capsys.readouterr().err
    secret = "https://bot:hunter2@intranet.acme.example/hr"  # every answer would show it
    assert main(["ingest", str(folder), "--kb", "hr", "--quiet", "--link-base", secret]) == 2
    assert "without a user name or password" in capsys.readouterr().err
    assert main(["ingest", str(folder), "--kb", "hr", "--quiet"]) == 0
    assert f"  sources link to {base}\n" in capsys.readouterr().out  # kept


def test_ingest_fails_only_when_nothing_could_be_read(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "broken.pdf").write_bytes(b"%PDF-1.4 no")
    assert main(["ingest", str(empty), "--kb", "kb", "--quiet"]) == 1
    out, _ = capsys.readouterr()
    assert f"Nothing could be read from {empty}; the knowledge base is unchanged." in out
    assert main(["ingest", str(tmp_path / "missing"), "--kb", "kb"]) == 1
    assert "is not a folder" in capsys.readouterr().err
    assert main(["ingest", str(empty), "--kb", "Bad Name"]) == 2
    assert "is not a knowledge base name" in capsys.readouterr().err


def test_ingest_reports_invalid_settings(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PARLEY_KNOWLEDGE_STORE", "pgvector")
    assert main(["ingest", str(tmp_path), "--kb", "kb"]) == 2
    assert "PARLEY_KNOWLEDGE_STORE=pgvector needs PARLEY_KNOWLEDGE_DATABASE_URL" in (
        capsys.readouterr().err
    )


def test_the_progress_bar_redraws_one_line_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    bar = ProgressBar(screen)
    bar(Progress("reading", 0, 2, "a.md"))
    bar(Progress("reading", 2, 2))
    bar(Progress("embedding", 5, 10))
    bar(Progress("done", 1, 1))
    bar.finish()
    lines = screen.getvalue().split("\n")
    assert lines[0].startswith("\rreading   [")
    assert lines[0].rstrip().endswith("2/2")
    assert lines[1].startswith("\rembedding [###############...............] 5/10")
    assert lines[2] == ""


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"knowledge_store": "pgvector"}, "needs PARLEY_KNOWLEDGE_DATABASE_URL"),
        ({"knowledge_database_url": "mysql://db/parley"}, "must be a PostgreSQL URL"),
        ({"knowledge_database_url": "postgresql://db"}, "must be a PostgreSQL URL with a database"),
        ({"tei_url": "tei:80"}, "PARLEY_TEI_URL: Value error, 'tei:80' is not an http"),
        ({"embeddings": "openai"}, "PARLEY_EMBEDDINGS"),
        ({"embeddings_languages": "english"}, "not a two-letter language code"),
        ({"knowledge_chunk_overlap": 200}, "PARLEY_KNOWLEDGE_CHUNK_OVERLAP must be smaller"),
        ({"knowledge_chunk_tokens": 8}, "PARLEY_KNOWLEDGE_CHUNK_TOKENS"),
    ],
)
def test_knowledge_settings_are_validated_with_clear_messages(
    overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(**overrides)


def test_factories_build_what_the_settings_name(tmp_path: Path) -> None:
    settings = load_settings(knowledge_dir=tmp_path)
    assert isinstance(create_embedder(settings), UseEmbedder)  # the multilingual default
    assert create_embedder(settings, threads=4).threads == 4  # type: ignore[attr-defined]
    assert isinstance(create_store(settings), FaissStore)
    retriever = create_retriever(settings)
    assert isinstance(retriever, FaissRetriever)
    assert {"en", "es"} <= retriever.dense_languages
    assert retriever.calibration is USE
    minilm = load_settings(knowledge_dir=tmp_path, embeddings="local")
    assert isinstance(create_embedder(minilm), LocalEmbedder)
    retriever = create_retriever(minilm)
    assert isinstance(retriever, FaissRetriever)
    assert retriever.dense_languages == {"en"}
    assert retriever.calibration is MINILM
    told = load_settings(embeddings="local", embeddings_languages="en,de")
    assert create_retriever(told).dense_languages == {"en", "de"}  # type: ignore[attr-defined]
    hashing = load_settings(knowledge_dir=tmp_path, embeddings="hashing")
    assert isinstance(create_embedder(hashing), HashingEmbedder)
    assert isinstance(create_retriever(hashing), FaissRetriever)
    tei = load_settings(embeddings="tei", tei_url="http://tei:80", tei_dimension=768)
    embedder = create_embedder(tei)
    assert isinstance(embedder, TeiEmbedder)
    assert embedder.dimension == 768
    pg = load_settings(
        knowledge_store="pgvector",
        knowledge_database_url="postgresql://parley@db:5432/parley",
        embeddings="hashing",
    )
    assert isinstance(create_store(pg), PgStore)
    assert isinstance(create_retriever(pg), PgRetriever)  # connects at its first search only


def test_a_store_that_cannot_be_written_is_one_clear_line_and_status_4(
    env: Path,
    docs: WriteFiles,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = docs({"a.md": "# A\n\nText.\n"})
    (env / "kb" / ".lock").mkdir(parents=True)  # root writes anywhere: block the lock file
    assert main(["ingest", str(folder), "--kb", "kb", "--quiet"]) == 4
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"parley: cannot write knowledge base 'kb' (Is a directory: {env / 'kb' / '.lock'}); "
        f"check PARLEY_KNOWLEDGE_DIR ({env}): a folder this user can write, with free space\n"
    )

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("", encoding="utf-8")
    monkeypatch.setenv("PARLEY_KNOWLEDGE_DIR", str(blocker / "index"))
    assert main(["ingest", str(folder), "--kb", "kb", "--quiet"]) == 4
    err = capsys.readouterr().err
    assert err.startswith("parley: cannot read knowledge base 'kb' (Not a directory: ")
    assert err.count("\n") == 1


def test_a_database_that_refuses_the_ingest_is_one_clear_line_and_status_4(
    env: Path, docs: WriteFiles, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    psycopg = pytest.importorskip("psycopg")
    try:
        with psycopg.connect(PG_URL, autocommit=True, connect_timeout=5) as conn:
            available = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
            ).fetchone()
            if available is None:
                pytest.skip("the local PostgreSQL lacks pgvector (see tests/knowledge/conftest)")
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not running at {PG_URL} ({exc})")
    read_only = "options=-c%20default_transaction_read_only%3Don"
    url = PG_URL + ("&" if "?" in PG_URL else "?") + read_only
    monkeypatch.setenv("PARLEY_KNOWLEDGE_STORE", "pgvector")
    monkeypatch.setenv("PARLEY_KNOWLEDGE_DATABASE_URL", url)
    folder = docs({"a.md": "# A\n\nText.\n"})
    assert main(["ingest", str(folder), "--kb", "kb", "--quiet"]) == 4
    assert capsys.readouterr().err == (
        "parley: PostgreSQL refused the ingest (ReadOnlySqlTransaction: cannot execute CREATE "
        "SCHEMA in a read-only transaction); check that the user of "
        "PARLEY_KNOWLEDGE_DATABASE_URL may write its tables and that the server has room\n"
    )
