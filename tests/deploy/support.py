"""Helpers for the deployment tests: the repository's paths, the external tools they run
(skipping, with the reason, only where a tool is not installed) and PromQL metric names."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import AliasChoices

from parley.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
RULES_FILE = DEPLOY / "prometheus" / "rules" / "parley.rules.yml"
DASHBOARD_FILE = DEPLOY / "grafana" / "dashboards" / "parley.json"

# The metrics Parley exports (README.md, "Monitoring"), by type. Counters are named with
# their _total suffix; histograms expose name_bucket, name_sum and name_count.
COUNTERS = {
    "parley_events_received_total",
    "parley_events_deduplicated_total",
    "parley_events_enqueued_total",
    "parley_tokens_generated_total",
    "parley_answers_total",
    "parley_errors_total",
    "parley_redactions_total",
}
GAUGES = {"parley_queue_depth", "parley_generations_in_flight", "parley_model_up"}
HISTOGRAMS = {
    "parley_queue_wait_seconds",
    "parley_time_to_first_token_seconds",
    "parley_generation_seconds",
}
METRICS = COUNTERS | GAUGES | HISTOGRAMS
# Series names a query may use: the above, and Prometheus' own `up` for scrape health.
SERIES = (
    COUNTERS
    | GAUGES
    | {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
    | {"up"}
)

# The deployments' embedder by default: the multilingual Universal Sentence Encoder packaged
# in the image, run in each worker (no server).
DEFAULT_EMBEDDINGS = "use"
# The opt-in TEI server (compose profile `tei`, kustomize component components/tei): its
# image and model, that model's vector size (it must equal PARLEY_TEI_DIMENSION) and the
# languages Parley lets its vectors rank (PARLEY_EMBEDDINGS_LANGUAGES). The model is
# multilingual like the default, so Spanish questions still find English documents.
TEI_IMAGE = "ghcr.io/huggingface/text-embeddings-inference"
TEI_MODEL = "BAAI/bge-m3"
TEI_MODEL_DIMENSION = 1024
TEI_LANGUAGES = "en,es"
# Where the image keeps the FAISS knowledge bases (Dockerfile: PARLEY_KNOWLEDGE_DIR, owned
# by the unprivileged user); compose and Kubernetes mount their volumes there.
KNOWLEDGE_DIR = "/var/lib/parley/knowledge"

# Environment variables that are not Parley settings but are read by what the deployment
# runs: TGI's Hugging Face token, and the workers' metrics port (being added to
# parley/settings.py with the /metrics work; README.md, "Monitoring").
NON_SETTINGS_ENV = {"HF_TOKEN", "PARLEY_METRICS_PORT"}


# Where each tool comes from, for the message of a test that has to skip without it.
_TOOL_SOURCES = {
    "docker-compose": "Debian's docker-compose package, which .ci/run installs",
    "promtool": "Debian's prometheus package, which .ci/run installs",
    "kubectl": "the machine image (kubectl with kustomize v5; Debian's is too old)",
}


def tool(name: str) -> str:
    """The path of an installed command-line tool, or skip the test saying which is missing
    and where it comes from."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"`{name}` is not installed; it comes from {_TOOL_SOURCES.get(name, name)}")
    return path


def run(args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, (
        f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def run_failing(
    args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> str:
    """Run a command that must fail; its standard error."""
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0, f"{' '.join(args)} unexpectedly succeeded:\n{result.stdout}"
    return result.stderr


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def settings_env_names() -> set[str]:
    """Every environment variable Parley's settings read."""
    names: set[str] = set()
    for info in Settings.model_fields.values():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        elif isinstance(alias, str):
            names.add(alias)
    return names


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_BRACES = re.compile(r"\{[^{}]*\}")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_VARIABLE = re.compile(r"\$\{?\w+\}?")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "inf",
    "nan",
    "atan2",
}


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects (Grafana variables allowed)."""
    text = _STRING.sub(" ", expr)
    text = _VARIABLE.sub(" ", text)
    text = _BRACES.sub(" ", text)
    # Subqueries nest one level: [5m:] inside (...)[10m:1m]; two passes clear both.
    text = _BRACKETS.sub(" ", _BRACKETS.sub(" ", text))
    text = _GROUPING.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def metric_family(series: str) -> str:
    """parley_generation_seconds_bucket -> parley_generation_seconds."""
    for hist in HISTOGRAMS:
        if series.startswith(hist) and series != hist:
            return hist
    return series
