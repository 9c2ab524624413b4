"""scripts/run COMMAND: any parley command, with the chat's installation and configuration.

Runs the real script in this checkout against the .venv that the test command made; the TGI
backend keeps it from compiling the local model's extra, which the test command does not
install."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from privacy.crypto import generate_key
from tests.support.processes import free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    (ROOT / ".env").exists() or Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
    reason="needs this checkout's .venv and no .env, whose settings would win",
)


def _run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """scripts/run ARGS with these variables on top of the environment (minus any key)."""
    inherited = {k: v for k, v in os.environ.items() if k != "PARLEY_ENCRYPTION_KEY"}
    return subprocess.run(
        [str(ROOT / "scripts" / "run"), *args],
        env={**inherited, "PARLEY_LLM_BACKEND": "tgi", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_parley_command_gets_its_arguments_and_the_configuration(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "vpn.md").write_text("# VPN\n\nUse GlobalProtect.\n", encoding="utf-8")
    result = _run(
        "ingest",
        str(docs),
        "--kb",
        "it-runbooks",
        PARLEY_ENCRYPTION_KEY=generate_key(),
        PARLEY_KNOWLEDGE_DIR=str(tmp_path / "kb"),
        PARLEY_EMBEDDINGS="hashing",
        PARLEY_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",  # a one-off needs no Redis
    )
    assert result.returncode == 0, result.stderr
    assert "it-runbooks: 1 files read (1 added" in result.stdout
    assert (tmp_path / "kb" / "it-runbooks").is_dir()


def test_keygen_prints_one_new_key_and_writes_none() -> None:
    try:
        result = _run("keygen")
        written = (ROOT / ".env").exists()
    finally:
        (ROOT / ".env").unlink(missing_ok=True)  # none existed before (see pytestmark)
    assert result.returncode == 0, result.stderr
    [key] = result.stdout.split()  # the key alone: what the script says goes to stderr
    assert len(key) == 44
    assert not written


def test_a_bad_command_is_parleys_own_usage_error() -> None:
    result = _run("no-such-command", PARLEY_ENCRYPTION_KEY=generate_key())
    assert result.returncode == 2
    assert "invalid choice: 'no-such-command'" in result.stderr
