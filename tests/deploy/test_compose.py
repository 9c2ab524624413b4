"""docker-compose.yml: valid for Compose (docker-compose v1's `config`, which needs no
engine, and the compose-spec parser), and what production on one GPU host needs."""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_spec import PyCompose

from tests.deploy.support import (
    DEFAULT_EMBEDDINGS,
    KNOWLEDGE_DIR,
    NON_SETTINGS_ENV,
    REPO,
    TEI_IMAGE,
    TEI_LANGUAGES,
    TEI_MODEL,
    TEI_MODEL_DIMENSION,
    load_yaml,
    run,
    run_failing,
    settings_env_names,
    tool,
)

COMPOSE_FILE = REPO / "docker-compose.yml"
# What an operator's .env holds, as placeholders.
ENV = {"HF_TOKEN": "hf_test", "PARLEY_ENCRYPTION_KEY": "placeholder-key"}
# What the comments of docker-compose.yml tell an operator to add to .env to embed with the
# `tei` service instead of in each worker.
TEI_SWITCH = {
    "COMPOSE_PROFILES": "tei",
    "PARLEY_EMBEDDINGS": "tei",
    "PARLEY_EMBEDDINGS_LANGUAGES": TEI_LANGUAGES,
}
_INTERPOLATION = re.compile(r"\$\$|\$\{([A-Za-z_]\w*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_]\w*)")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's variable substitution: ${X}, ${X:-default}, ${X-default}, ${X:?error},
    ${X?error}, $X and $$, applied to every string of the parsed file."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        op, arg = match.group(2), match.group(3) or ""
        present = name in env
        current = env.get(name, "")
        unset = not current if op and op.startswith(":") else not present
        if op in (":-", "-") and unset:
            return arg
        if op in (":?", "?") and unset:
            raise KeyError(f"{name}: {arg}")
        return current

    return _INTERPOLATION.sub(substitute, value)


def resolved(env: dict[str, str] = ENV) -> dict[str, Any]:
    return dict(interpolate(load_yaml(COMPOSE_FILE), env))


def services(env: dict[str, str] = ENV) -> dict[str, Any]:
    return dict(resolved(env)["services"])


def command_flags(service: dict[str, Any]) -> dict[str, str]:
    flags = {}
    for arg in service["command"]:
        if arg.startswith("--") and "=" in arg:
            key, value = arg[2:].split("=", 1)
            flags[key] = value
    return flags


def compose_project(tmp_path: Path, env: dict[str, str] | None = None) -> Path:
    """A copy of the project's compose file beside a placeholder .env (plus `env`) and
    deploy/."""
    (tmp_path / "docker-compose.yml").write_text(COMPOSE_FILE.read_text())
    (tmp_path / "deploy").symlink_to(REPO / "deploy")
    (tmp_path / "Dockerfile").symlink_to(REPO / "Dockerfile")
    lines = ["SLACK_BOT_TOKEN=xoxb-placeholder", "SLACK_SIGNING_SECRET=x"]
    lines += [f"{key}={value}" for key, value in (env or {}).items()]
    (tmp_path / ".env").write_text("\n".join(lines) + "\n")
    return tmp_path


ALL_PROFILES = ("monitoring", "flower", "tei")


def compose_config(project: Path, profiles: tuple[str, ...] = ALL_PROFILES) -> str:
    """`docker-compose config` (every profile by default): interpolated, merged and
    validated. Only the project's .env sets Parley's variables: not the caller's shell."""
    binary = tool("docker-compose")
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COMPOSE_", "DOCKER_", "PARLEY_", "TGI_"))
    }
    flags = [arg for profile in profiles for arg in ("--profile", profile)]
    return run([binary, *flags, "config"], cwd=project, env={**clean, **ENV})


def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    project = compose_project(tmp_path)
    config = yaml.safe_load(compose_config(project))
    assert set(config["services"]) == {
        "tgi",
        "tei",
        "redis",
        "bot",
        "worker",
        "prometheus",
        "grafana",
        "flower",
    }
    # v1 merged .env into the services that read it: the secret arrives from there.
    assert config["services"]["bot"]["environment"]["SLACK_BOT_TOKEN"] == "xoxb-placeholder"
    # By default the workers embed themselves, and start without `tei`.
    assert config["services"]["tei"]["profiles"] == ["tei"]
    for name in ("bot", "worker"):
        service = config["services"][name]
        assert service["environment"]["PARLEY_EMBEDDINGS"] == DEFAULT_EMBEDDINGS, name
        assert "tei" not in service.get("depends_on", {}), name


def test_docker_compose_config_with_the_tei_switch_points_workers_at_tei(
    tmp_path: Path,
) -> None:
    """The lines the comments tell an operator to put in .env (COMPOSE_PROFILES=tei, ...),
    and nothing else, make a valid file whose workers embed with the `tei` service."""
    project = compose_project(tmp_path, TEI_SWITCH)
    config = yaml.safe_load(compose_config(project, profiles=()))
    tei = config["services"]["tei"]
    assert tei["profiles"] == ["tei"]
    flags = command_flags(tei)
    assert flags["model-id"] == TEI_MODEL
    for name in ("bot", "worker"):
        env = config["services"][name]["environment"]
        assert env["PARLEY_EMBEDDINGS"] == "tei", name
        assert env["PARLEY_TEI_URL"] == f"http://tei:{flags['port']}", name
        assert int(env["PARLEY_TEI_DIMENSION"]) == TEI_MODEL_DIMENSION, name
        assert env["PARLEY_EMBEDDINGS_LANGUAGES"] == TEI_LANGUAGES, name


def test_docker_compose_config_rejects_a_broken_file(tmp_path: Path) -> None:
    """The validator is not vacuous: a misspelt key fails."""
    project = compose_project(tmp_path)
    text = COMPOSE_FILE.read_text().replace("shm_size: 1g", "shm_sise: 1g")
    (project / "docker-compose.yml").write_text(text)
    stderr = run_failing(
        [tool("docker-compose"), "config", "--quiet"], cwd=project, env={**os.environ, **ENV}
    )
    assert "shm_sise" in stderr


def test_docker_compose_config_requires_the_secrets(tmp_path: Path) -> None:
    project = compose_project(tmp_path)
    clean = {k: v for k, v in os.environ.items() if k not in ("HF_TOKEN", "PARLEY_ENCRYPTION_KEY")}
    stderr = run_failing(
        [tool("docker-compose"), "config", "--quiet"],
        cwd=project,
        env={**clean, "HF_TOKEN": "hf_test"},
    )
    assert "parley keygen" in stderr


def compose_spec_document(data: dict[str, Any]) -> PyCompose:
    return PyCompose.from_json(json.dumps(data))


def test_compose_spec_validates_the_file() -> None:
    document = compose_spec_document(resolved())
    document.validate()
    assert sorted(document.service_names()) == sorted(services())
    tgi = document.get_service("tgi")
    assert tgi is not None
    assert tgi.shm_size is not None


@pytest.mark.parametrize(
    ("service", "key", "bad"),
    [
        ("tgi", "shm_sise", "1g"),
        ("tei", "healthcheck", {"test": ["CMD", "true"], "retries": "four"}),
        ("worker", "deploy", {"replicas": "two"}),
        ("bot", "healthcheck", {"test": ["CMD", "true"], "interval": "15x"}),
        ("bot", "depends_on", {"redis": {"condition": "healthy"}}),
    ],
)
def test_compose_spec_rejects_invalid_services(service: str, key: str, bad: Any) -> None:
    data = copy.deepcopy(resolved())
    data["services"][service][key] = bad
    with pytest.raises(ValueError):  # noqa: PT011 - the parser raises plain ValueError
        compose_spec_document(data).validate()


def test_tgi_serves_llama3_pinned_on_a_reserved_gpu() -> None:
    tgi = services()["tgi"]
    image, _, tag = tgi["image"].rpartition(":")
    assert image == "ghcr.io/huggingface/text-generation-inference"
    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), "pin an exact TGI release, not latest"
    flags = command_flags(tgi)
    assert flags["model-id"] == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert tgi["environment"]["HF_TOKEN"] == ENV["HF_TOKEN"]
    devices = tgi["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert tgi["shm_size"]
    weights = [v for v in tgi["volumes"] if v.endswith(":/data")]
    assert weights, "a volume for the weights"
    assert weights[0].split(":")[0] in resolved()["volumes"], "a named volume"
    assert "--quantize" in COMPOSE_FILE.read_text(), "quantization options are documented"


def test_token_limits_agree_between_tgi_and_parley() -> None:
    svc = services()
    flags = command_flags(svc["tgi"])
    max_input, max_total = int(flags["max-input-tokens"]), int(flags["max-total-tokens"])
    assert int(flags["max-batch-prefill-tokens"]) >= max_input
    for name in ("bot", "worker"):
        env = svc[name]["environment"]
        context = int(env["PARLEY_CONTEXT_TOKENS"])
        max_new = int(env.get("PARLEY_MAX_NEW_TOKENS", 512))
        assert context == max_total, f"{name}: PARLEY_CONTEXT_TOKENS must be TGI's max total"
        # Parley budgets prompts to context - max_new tokens: TGI must accept them.
        assert context - max_new <= max_input < max_total


def test_redis_never_evicts_and_persists() -> None:
    redis = services()["redis"]
    command = [str(part) for part in redis["command"]]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert "redis-cli" in redis["healthcheck"]["test"]


def test_bot_and_workers_run_parley_with_secrets_from_env() -> None:
    svc = services()
    raw = load_yaml(COMPOSE_FILE)
    for name, command in (("bot", ["serve"]), ("worker", ["worker"])):
        service = svc[name]
        assert service["command"] == command
        assert service["env_file"] == ".env"
        assert service["build"]["context"] == "."
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        # The key is taken from the environment (.env), never written in the file.
        assert raw["services"][name]["environment"]["PARLEY_ENCRYPTION_KEY"].startswith(
            "${PARLEY_ENCRYPTION_KEY:?"
        )
        assert service["environment"]["PARLEY_REDIS_URL"] == "redis://redis:6379/0"
        assert service["environment"]["TGI_URL"] == "http://tgi:80"
    assert svc["worker"]["deploy"]["replicas"] >= 2
    assert svc["worker"]["environment"]["PARLEY_METRICS_PORT"] == "9400"
    assert "3000:3000" in svc["bot"]["ports"]


def test_environment_names_are_parley_settings() -> None:
    known = settings_env_names() | NON_SETTINGS_ENV
    for name in ("bot", "worker"):
        unknown = set(services()[name]["environment"]) - known
        assert not unknown, f"{name} sets variables Parley does not read: {unknown}"


def test_every_service_restarts_checks_its_health_and_waits_for_what_it_needs() -> None:
    svc = services()
    for name, service in svc.items():
        assert service.get("restart") == "unless-stopped", name
        if name != "flower":
            assert service["healthcheck"]["test"][0] == "CMD", name
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in svc, f"{name} depends on unknown {dependency}"
            assert condition["condition"] in ("service_healthy", "service_started")
    assert svc["bot"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert svc["worker"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert svc["worker"]["depends_on"]["tgi"]["condition"] == "service_healthy"
    # Compose refuses to start a service that depends on one whose profile is off: nothing
    # may depend on an optional service (TEI included) unless it shares its profiles.
    for name, service in svc.items():
        for dependency in service.get("depends_on", {}):
            needed = set(svc[dependency].get("profiles", []))
            assert needed <= set(service.get("profiles", [])), f"{name} needs {dependency}"


def test_optional_profiles_and_their_files() -> None:
    svc = services()
    assert {n for n, s in svc.items() if "profiles" not in s} == {
        "tgi",
        "redis",
        "bot",
        "worker",
    }
    assert svc["prometheus"]["profiles"] == ["monitoring"]
    assert svc["grafana"]["profiles"] == ["monitoring"]
    assert svc["flower"]["profiles"] == ["flower"]
    assert svc["tei"]["profiles"] == ["tei"]
    for name in ("prometheus", "grafana"):
        for volume in svc[name]["volumes"]:
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
    for service in svc.values():
        for port in service.get("ports", []):
            if service.get("profiles"):
                assert port.startswith("127.0.0.1:"), "monitoring UIs stay on localhost"


def test_workers_embed_in_process_by_default() -> None:
    """Without the TEI switch the workers (and `worker ingest`) run the multilingual model
    packaged in the image; the setting is taken from .env, so the switch needs no edit here."""
    svc = services()
    raw = load_yaml(COMPOSE_FILE)
    for name in ("bot", "worker"):
        env = svc[name]["environment"]
        assert env["PARLEY_EMBEDDINGS"] == DEFAULT_EMBEDDINGS, name
        assert raw["services"][name]["environment"]["PARLEY_EMBEDDINGS"] == (
            f"${{PARLEY_EMBEDDINGS:-{DEFAULT_EMBEDDINGS}}}"
        ), name
        # The store is the operator's choice (.env): faiss by default, or pgvector.
        assert "PARLEY_KNOWLEDGE_STORE" not in env, name
    example = (REPO / ".env.example").read_text()
    assert f"# PARLEY_EMBEDDINGS={DEFAULT_EMBEDDINGS} " in example


def test_tei_profile_serves_a_multilingual_model_workers_switch_to() -> None:
    svc = services({**ENV, **TEI_SWITCH})
    tei = svc["tei"]
    image, _, tag = tei["image"].rpartition(":")
    assert image == TEI_IMAGE
    # The CPU build (no GPU is reserved for it), pinned to a release, never latest.
    assert re.fullmatch(r"cpu-\d+\.\d+(\.\d+)?", tag), tag
    assert "deploy" not in tei, "TEI runs on CPU: the GPU stays TGI's"
    flags = command_flags(tei)
    assert flags["model-id"] == TEI_MODEL
    # Bound to every address ($HOSTNAME would be the container's address only, which the
    # health check on 127.0.0.1 would miss).
    assert flags["hostname"] == "0.0.0.0"
    # Parley's TeiEmbedder sends at most 32 texts per request.
    assert int(flags.get("max-client-batch-size", 32)) >= 32
    weights = [v for v in tei["volumes"] if v.endswith(":/data")]
    assert weights, "a volume for the weights"
    assert weights[0].split(":")[0] in resolved()["volumes"], "a named volume"
    assert tei["healthcheck"]["test"][-1] == f"http://127.0.0.1:{flags['port']}/health"
    assert "ports" not in tei, "only the compose network reaches TEI"
    for name in ("bot", "worker"):
        env = svc[name]["environment"]
        assert env["PARLEY_EMBEDDINGS"] == "tei", name
        assert env["PARLEY_TEI_URL"] == f"http://tei:{flags['port']}", name
        assert int(env["PARLEY_TEI_DIMENSION"]) == TEI_MODEL_DIMENSION, name
    # The switch is documented where operators look: every line of it, the model, and the
    # re-ingest that a change of model needs.
    text = COMPOSE_FILE.read_text()
    for key, value in TEI_SWITCH.items():
        assert f"#   {key}={value}" in text, key
    assert "re-ingest" in text
    assert TEI_MODEL in text


def test_knowledge_bases_live_on_a_volume_workers_write_and_the_bot_reads() -> None:
    svc = services()
    mounts = {}
    for name in ("bot", "worker"):
        assert svc[name]["environment"]["PARLEY_KNOWLEDGE_DIR"] == KNOWLEDGE_DIR, name
        (mount,) = [v for v in svc[name]["volumes"] if v.split(":")[1] == KNOWLEDGE_DIR]
        mounts[name] = mount.split(":")
        assert mounts[name][0] in resolved()["volumes"], f"{name}: a named volume"
    assert mounts["bot"][0] == mounts["worker"][0], "one volume, shared"
    assert mounts["bot"][2:] == ["ro"], "the bot only lists the knowledge bases"
    assert mounts["worker"][2:] == [], "workers (and `worker ingest`) write"
    # The one-off ingest is documented where operators look.
    ingest = re.compile(r"docker compose run --rm -v \S+:/docs:ro\"? worker ingest /docs --kb \S+")
    assert ingest.search(COMPOSE_FILE.read_text()), "docker-compose.yml documents ingest"
    assert ingest.search((REPO / "README.md").read_text()), "README.md documents ingest"
