"""Fixtures for the deploy checks: the repository's deploy files, read and rendered offline.

No Docker engine runs on the project's machines, so these checks use what does: hadolint,
the real `kubectl kustomize`, the Kubernetes and compose-spec JSON schemas, and uv. Each tool
comes from the dev dependencies; a missing one skips on a laptop and fails under CI=true.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from conftest import unreachable
from shelfmark.jobs.kinds import uploads_dir
from shelfmark.reports.service import report_path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


def find_tool(name: str) -> str:
    """The tool from this venv's dev dependencies, else from PATH."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if found is None:
        reason = f"{name} is not installed (it is a dev dependency: uv sync --locked)"
        unreachable(reason)
    return found


@pytest.fixture(scope="session")
def tool() -> Callable[[str], str]:
    return find_tool


# --- Dockerfile ---------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    value: str
    stage: int

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form ENTRYPOINT, CMD or HEALTHCHECK CMD."""
        text = self.value.split(" CMD ", 1)[1] if self.keyword == "HEALTHCHECK" else self.value
        words = json.loads(text)
        assert isinstance(words, list), f"{self.keyword} is not in exec form: {self.value}"
        return [str(word) for word in words]


@dataclass
class Dockerfile:
    instructions: list[Instruction]
    stages: list[str] = field(default_factory=list)  # the FROM line of each stage

    def final(self, keyword: str) -> list[Instruction]:
        last = len(self.stages) - 1
        return [i for i in self.instructions if i.stage == last and i.keyword == keyword]

    def env(self, stage: int) -> dict[str, str]:
        """The variables the ENV instructions of `stage` set (`$PATH` left as written)."""
        pairs = [
            shlex.split(i.value)
            for i in self.instructions
            if i.stage == stage and i.keyword == "ENV"
        ]
        return dict(pair.split("=", 1) for words in pairs for pair in words)


def parse_dockerfile(path: Path) -> Dockerfile:
    """Instructions with their continuation lines joined and comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(" ".join((pending + line).split()))
        pending = ""
    dockerfile = Dockerfile(instructions=[])
    for line in logical:
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            dockerfile.stages.append(value)
        stage = len(dockerfile.stages) - 1
        dockerfile.instructions.append(Instruction(keyword, value, stage))
    return dockerfile


@pytest.fixture(scope="session")
def dockerfile() -> Dockerfile:
    return parse_dockerfile(DEPLOY / "Dockerfile")


@pytest.fixture(scope="session")
def image_command(dockerfile: Dockerfile) -> list[str]:
    """What `docker run IMAGE` runs: the final stage's ENTRYPOINT followed by its CMD."""
    (entrypoint,) = dockerfile.final("ENTRYPOINT")
    (command,) = dockerfile.final("CMD")
    return entrypoint.exec_form() + command.exec_form()


@pytest.fixture(scope="session")
def runtime_env(dockerfile: Dockerfile) -> dict[str, str]:
    """The final stage's ENV: the environment every container of the image starts with."""
    return dockerfile.env(len(dockerfile.stages) - 1)


# --- Files the roles share ----------------------------------------------------------------


def shared_folders(home: str) -> dict[str, PurePosixPath]:
    """The folders of SHELFMARK_HOME `home` that one role writes and another reads, as the
    code names them: a MARC upload is saved by the API (`serve`) and imported by a `worker`;
    a report is written by a `worker` and downloaded through the API."""
    root = Path(home)
    return {
        "uploads": PurePosixPath(uploads_dir(root)),
        "reports": PurePosixPath(report_path(root, job_id=1, format="csv").parent),
    }


@pytest.fixture(scope="session")
def folders_shared_by_roles() -> Callable[[str], dict[str, PurePosixPath]]:
    return shared_folders


@pytest.fixture(scope="session")
def sharing_roles() -> tuple[str, ...]:
    """The roles that pass files to each other through those folders."""
    return ("serve", "worker")


@pytest.fixture(scope="session")
def uv_sync_args(dockerfile: Dockerfile) -> list[str]:
    """The arguments of the Dockerfile's last `uv sync`: the one that installs Shelfmark."""
    runs = [shlex.split(i.value) for i in dockerfile.instructions if i.keyword == "RUN"]
    syncs = [words[words.index("uv") + 2 :] for words in runs if "uv sync" in " ".join(words)]
    assert syncs, "the Dockerfile never runs `uv sync`"
    return syncs[-1]


# --- Compose ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert isinstance(loaded, dict)
    return loaded


# --- Kubernetes ---------------------------------------------------------------------------


def kustomizations() -> list[str]:
    """Every kustomization that renders on its own (bases and overlays, not components)."""
    return [
        path.parent.relative_to(K8S).as_posix()
        for path in sorted(K8S.rglob("kustomization.yaml"))
        if yaml.safe_load(path.read_text()).get("kind") != "Component"
    ]


@cache
def render(target: str) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize` of one target, the same renderer `kubectl apply -k` uses."""
    kubectl = find_tool("kubectl")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / target)],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp")},
    )  # fmt: skip
    assert result.returncode == 0, f"kubectl kustomize {target} failed:\n{result.stderr}"
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that takes `target` runs once per kustomization, so a new overlay is checked
    without anyone listing it."""
    if "target" in metafunc.fixturenames:
        metafunc.parametrize("target", kustomizations())


@pytest.fixture
def rendered(target: str) -> tuple[dict[str, Any], ...]:
    return render(target)


@pytest.fixture(scope="session")
def render_kustomization() -> Callable[[str], tuple[dict[str, Any], ...]]:
    """For a test about one named kustomization (`overlays/prod`)."""
    return render


@pytest.fixture(scope="session")
def all_kustomizations() -> list[str]:
    return kustomizations()
