"""`parley doctor` as an operator runs it: every service checked, a clear fix for each fault."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from knowledge.embeddings import HashingEmbedder, TeiEmbedder
from knowledge.faiss_store import MANIFEST_FILE, FaissStore
from knowledge.ingest import ingest_folder
from knowledge.pgvector_store import PgStore, redact_url
from knowledge.use_embedder import UseEmbedder
from tests.fakes.slack_api import FakeSlack
from tests.fakes.tei import FakeTEI
from tests.fakes.tgi import FakeTGI
from tests.support import slack_events as ev
from tests.support.config import ENCRYPTION_KEY
from tests.support.postgres import PG_URL, connect, has_pgvector
from tests.support.processes import free_port

Doctor = Callable[..., subprocess.CompletedProcess[str]]

HANDBOOK = {
    "vacation.md": "# Vacation policy\n\n## Carry-over\n\nUp to five unused days carry over.\n",
    "vpn.md": "# VPN\n\n## Client\n\nInstall GlobalProtect from the portal.\n",
}


@pytest.fixture
def knowledge_dir(tmp_path: Path) -> Path:
    """Not created: a doctor run never finds the knowledge bases of the machine it runs on."""
    return tmp_path / "knowledge-data"


@pytest.fixture
def doctor(knowledge_dir: Path) -> Doctor:
    def run(**env: str) -> subprocess.CompletedProcess[str]:
        clean = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PARLEY_", "SLACK_", "TGI_", "Microsoft"))
        }
        return subprocess.run(
            [sys.executable, "-m", "parley.cli", "doctor"],
            env={
                **clean,
                "PARLEY_ENCRYPTION_KEY": ENCRYPTION_KEY,
                "PARLEY_KNOWLEDGE_DIR": str(knowledge_dir),
                **env,
            },
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )

    return run


@pytest.fixture
def handbook(tmp_path: Path) -> Path:
    folder = tmp_path / "handbook"
    folder.mkdir()
    for name, text in HANDBOOK.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def failures(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("✗")]


def test_a_healthy_setup_passes(
    doctor: Doctor, redis_url: str, fake_tgi: FakeTGI, fake_slack: FakeSlack
) -> None:
    result = doctor(
        PARLEY_REDIS_URL=redis_url,
        TGI_URL=fake_tgi.url,
        SLACK_BOT_TOKEN=ev.BOT_TOKEN,
        SLACK_SIGNING_SECRET=ev.SIGNING_SECRET,
        SLACK_API_URL=fake_slack.url,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"✓ Redis ({redis_url}): reachable" in result.stdout
    assert "! Workers: none running" in result.stdout, "a warning, not a failure"
    assert "✓ Model (TGI at" in result.stdout
    assert "Meta-Llama-3-8B-Instruct" in result.stdout
    assert "✓ Slack auth.test: bot" in result.stdout
    assert (
        "✓ Embeddings (Universal Sentence Encoder): use-multilingual-v3, 512-dimensional vectors"
        in result.stdout
    )
    assert "✓ Knowledge store (FAISS in " in result.stdout
    assert "not created yet: `parley ingest` creates it" in result.stdout
    assert "✓ Knowledge bases: none ingested yet" in result.stdout, "optional: not a warning"
    assert "All good." in result.stdout


def test_a_stopped_redis_a_dead_model_and_a_bad_slack_token_are_explained(
    doctor: Doctor, fake_slack: FakeSlack
) -> None:
    fake_slack.fail("auth.test", error="invalid_auth", status=200, times=None)
    result = doctor(
        PARLEY_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
        TGI_URL=f"http://127.0.0.1:{free_port()}",
        SLACK_BOT_TOKEN="xoxb-revoked",
        SLACK_SIGNING_SECRET="secret",
        SLACK_API_URL=fake_slack.url,
    )
    assert result.returncode == 1
    out = result.stdout
    assert "✗ Redis (redis://127.0.0.1:" in out
    assert "not reachable" in out
    assert "fix: start Redis (`redis-server --daemonize yes`" in out
    assert "✗ Model (TGI at" in out
    assert "fix: start TGI" in out
    assert "✗ Slack auth.test: refused: invalid_auth" in out
    assert "Bot User OAuth Token" in out
    assert "Traceback" not in out + result.stderr


def test_a_wrong_context_size_and_a_dead_broker_are_failures(
    doctor: Doctor, redis_url: str, fake_tgi: FakeTGI
) -> None:
    result = doctor(
        PARLEY_REDIS_URL=redis_url,
        TGI_URL=fake_tgi.url,
        PARLEY_CONTEXT_TOKENS="1000000",
        PARLEY_MAX_NEW_TOKENS="512",
        PARLEY_BROKER_URL=f"amqp://guest:guest@127.0.0.1:{free_port()}//",
    )
    assert result.returncode == 1
    assert "✗ Context size: PARLEY_CONTEXT_TOKENS=1000000 exceeds" in result.stdout
    assert "✗ Broker (amqp://guest:***@127.0.0.1:" in result.stdout
    assert "rabbitmq-server" in result.stdout


async def test_each_knowledge_base_is_listed_and_one_built_by_another_model_fails(
    doctor: Doctor, redis_url: str, fake_tgi: FakeTGI, knowledge_dir: Path, handbook: Path
) -> None:
    store = FaissStore(knowledge_dir)
    await ingest_folder(handbook, "hr-policies", store=store, embedder=UseEmbedder())
    await ingest_folder(handbook, "it-runbooks", store=store, embedder=HashingEmbedder())
    await ingest_folder(handbook, "damaged", store=store, embedder=UseEmbedder())
    generation = store.kb_dir("damaged") / (store.current("damaged") or "")
    (generation / MANIFEST_FILE).write_text('{"format": 99}')
    version = store.current("hr-policies")
    result = doctor(PARLEY_REDIS_URL=redis_url, TGI_URL=fake_tgi.url)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert f"✓ Knowledge store (FAISS in {knowledge_dir}): readable and writable" in out
    assert (
        "✓ Knowledge base hr-policies: 2 chunks from 2 files, built with use-multilingual-v3 "
        f"(512-dimensional), version {version}"
    ) in out
    # The one failure: workers would refuse it (HybridRetriever._check_embedder).
    assert failures(out) == [
        f"✗ Knowledge base damaged: cannot be read ({generation} has an unknown format; ingest "
        "the knowledge base again)",
        "✗ Knowledge base it-runbooks: built with hashing-256 (256-dimensional), but the "
        "configured embedder is use-multilingual-v3 (512-dimensional): workers refuse it",
    ]
    assert (
        "    fix: re-ingest it: `parley ingest <folder> --kb it-runbooks`, or configure the "
        "embedder it was built with"
    ) in out


async def test_a_dead_tei_server_fails_and_its_knowledge_bases_are_compared_by_size(
    doctor: Doctor, knowledge_dir: Path, handbook: Path
) -> None:
    with FakeTEI(dimension=64) as tei:
        embedder = TeiEmbedder(tei.url, dimension=64)
        await ingest_folder(handbook, "faq", store=FaissStore(knowledge_dir), embedder=embedder)
    dead = f"http://127.0.0.1:{free_port()}"
    result = doctor(PARLEY_EMBEDDINGS="tei", PARLEY_TEI_URL=dead, PARLEY_TEI_DIMENSION="64")
    out = result.stdout
    assert result.returncode == 1
    assert f"✗ Embeddings (TEI at {dead}): the embeddings server at {dead} failed" in out
    assert "fix: start the Text Embeddings Inference server" in out
    assert "set PARLEY_TEI_URL to where it runs" in out
    # A server that cannot say which model it serves: compared by vector size only.
    assert "✓ Knowledge base faq: 2 chunks from 2 files, built with tei:acme/hashing (64-" in out

    result = doctor(PARLEY_EMBEDDINGS="tei", PARLEY_TEI_URL=dead, PARLEY_TEI_DIMENSION="384")
    assert "✗ Knowledge base faq: built with tei:" in result.stdout
    assert "(384-dimensional): workers refuse it" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_an_unreachable_knowledge_database_is_a_failure_without_its_password(
    doctor: Doctor,
) -> None:
    url = f"postgresql://parley:hunter2@127.0.0.1:{free_port()}/parley"
    result = doctor(PARLEY_KNOWLEDGE_STORE="pgvector", PARLEY_KNOWLEDGE_DATABASE_URL=url)
    out = result.stdout
    assert result.returncode == 1
    assert "✗ Knowledge store (PostgreSQL at postgresql://parley:***@127.0.0.1:" in out
    assert "fix: start PostgreSQL or fix PARLEY_KNOWLEDGE_DATABASE_URL" in out
    assert "Knowledge bases" not in out, "nothing to say about what cannot be read"
    assert "hunter2" not in out + result.stderr


@pytest.fixture
async def pg_database() -> AsyncIterator[tuple[str, bool]]:
    """(URL, whether the server has pgvector) of a database of its own in the real PostgreSQL,
    dropped afterwards: the store always uses schema `public`, which the doctor reads."""
    admin = await connect()
    name = f"parley_doctor_{uuid.uuid4().hex[:12]}"
    available = await has_pgvector(admin)
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield PG_URL.rsplit("/", 1)[0] + f"/{name}", available
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_a_knowledge_base_in_postgresql(
    doctor: Doctor, pg_database: tuple[str, bool], handbook: Path
) -> None:
    url, available = pg_database
    if not available:
        pytest.skip("the pgvector extension is not installed in the local PostgreSQL (.ci/run)")
    env = {
        "PARLEY_KNOWLEDGE_STORE": "pgvector",
        "PARLEY_KNOWLEDGE_DATABASE_URL": url,
        "PARLEY_EMBEDDINGS": "hashing",
    }
    before = doctor(**env).stdout
    assert "✓ Knowledge store (PostgreSQL at " in before
    assert "connected; `parley ingest` creates the pgvector" in before  # as a superuser
    assert "✓ Knowledge bases: none ingested yet" in before

    await ingest_folder(handbook, "handbook", store=PgStore(url), embedder=HashingEmbedder())
    after = doctor(**env).stdout
    assert "! Embeddings (hashing): hashing-256, 256-dimensional vectors: for tests" in after
    assert "✓ Knowledge store (PostgreSQL at " in after
    assert "connected, pgvector " in after
    assert (
        "✓ Knowledge base handbook: 2 chunks from 2 files, built with hashing-256 "
        "(256-dimensional), version 1"
    ) in after
    assert not [line for line in failures(after) if "Knowledge" in line or "Embeddings" in line]


async def test_a_postgresql_without_pgvector_is_a_failure(
    doctor: Doctor, pg_database: tuple[str, bool]
) -> None:
    url, available = pg_database
    if available:
        pytest.skip("the local PostgreSQL has pgvector")
    result = doctor(PARLEY_KNOWLEDGE_STORE="pgvector", PARLEY_KNOWLEDGE_DATABASE_URL=url)
    assert result.returncode == 1
    assert f"✗ Knowledge store (PostgreSQL at {redact_url(url)}): connected, but" in result.stdout
    assert "the server lacks the pgvector extension" in result.stdout
    assert "fix: install pgvector on the database server (Debian: apt-get install " in result.stdout
