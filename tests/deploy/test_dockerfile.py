"""The Dockerfile, read as text: no Docker engine runs here to build it. A multi-stage
build whose runtime stage is slim, unprivileged, without build tools, with a health check,
and which ships every package that pyproject.toml installs."""

from __future__ import annotations

import re
import tomllib

from tests.deploy.support import KNOWLEDGE_DIR, REPO

DOCKERFILE = REPO / "Dockerfile"


def stages() -> list[tuple[str, list[str]]]:
    """(stage name, its instructions), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    result: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            name = line.split()[-1] if " AS " in line.upper() else ""
            result.append((name, [line]))
        elif result:
            result[-1][1].append(line)
    return result


def test_builder_builds_wheels_and_runtime_installs_only_those() -> None:
    (builder, build), (runtime, run) = stages()
    assert (builder, runtime) == ("builder", "runtime")
    assert any("pip wheel" in line and "/wheels" in line for line in build)
    install = next(line for line in run if "pip install" in line)
    assert "--no-index" in install
    assert "from=builder" in install
    assert "-slim" in DOCKERFILE.read_text().split("PYTHON_IMAGE=")[1].split()[0]


def test_runtime_stage_has_no_build_tools_and_runs_unprivileged() -> None:
    _, run = stages()[-1]
    body = "\n".join(run)
    for tool in ("build-essential", "gcc", "apt-get install", "python3-dev"):
        assert tool not in body, f"runtime stage installs {tool}"
    users = [line.split()[1] for line in run if line.startswith("USER ")]
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")
    assert re.fullmatch(r"\d+(:\d+)?", users[-1]), "a numeric user satisfies runAsNonRoot"
    assert "PYTHONDONTWRITEBYTECODE=1" in body, "the root file system can be read-only"
    healthcheck = next(line for line in run if line.startswith("HEALTHCHECK "))
    assert "/healthz" in healthcheck
    assert next(line for line in run if line.startswith("ENTRYPOINT")) == 'ENTRYPOINT ["parley"]'


def test_image_ships_every_package_and_no_secrets() -> None:
    _, build = stages()[0]
    assert "COPY . ." in build, "the builder takes the whole (filtered) build context"
    ignored = {
        line.strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".env", ".git", ".venv", "tests"} <= ignored
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    needed = packages | {"pyproject.toml", "README.md"}
    assert not needed & ignored, f"left out of the image: {needed & ignored}"


def test_image_installs_the_knowledge_extra_and_torch_only_for_cpu() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert "\nARG PARLEY_EXTRAS=knowledge\n" in text, "the knowledge extra by default"
    (_, build), (_, run) = stages()
    assert "ARG PARLEY_EXTRAS" in build
    assert "ARG PARLEY_EXTRAS" in run
    wheels = next(line for line in build if "pip wheel" in line)
    assert '".[${PARLEY_EXTRAS}]"' in wheels, "the builder builds the extras' wheels"
    # torch (when an extra wants it) from PyTorch's CPU index: PyPI's is the CUDA build.
    assert "--extra-index-url" in wheels
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in build
    install = next(line for line in run if "pip install" in line)
    assert '"parley[${PARLEY_EXTRAS}]"' in install
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    # The default image needs no torch: the default embedding model is pure numpy.
    assert not any(dep.startswith("torch") for dep in extras["knowledge"])
    local = extras["local-embeddings"]
    assert any(re.fullmatch(r"torch==[\d.]+", dep) for dep in local), "torch pinned exactly"


def test_knowledge_dir_is_writable_by_the_unprivileged_user() -> None:
    _, run = stages()[-1]
    body = "\n".join(run)
    # Created owned by the runtime user, so a named volume mounted there starts writable.
    assert f"install -d -o parley -g parley -m 0750 {KNOWLEDGE_DIR}" in body
    assert f"PARLEY_KNOWLEDGE_DIR={KNOWLEDGE_DIR}" in body
