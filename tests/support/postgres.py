"""The real PostgreSQL that the knowledge and doctor tests use (.ci/run starts it)."""

from __future__ import annotations

import os
from typing import Any

import pytest

PG_URL = os.environ.get("PARLEY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def connect() -> Any:
    """An autocommit connection to PG_URL; fails the test, saying how to start the server,
    when it is not running (as the Redis fixture does)."""
    import psycopg

    try:
        return await psycopg.AsyncConnection.connect(PG_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not running at {PG_URL} ({exc}). Start it: pg_ctlcluster "
            "--skip-systemctl-redirect 15 main start (.ci/run does this)."
        )


async def has_pgvector(conn: Any) -> bool:
    """Whether the server has the pgvector extension to create."""
    query = "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
    return await (await conn.execute(query)).fetchone() is not None
