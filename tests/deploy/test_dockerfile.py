"""deploy/Dockerfile and .dockerignore: linted, and shaped as docs/deploy.md promises."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
ROLES = {"serve", "worker", "beat", "migrate", "sip2"}


def test_hadolint_finds_nothing_at_warning_or_above(
    tool: Callable[[str], str], tmp_path: Path
) -> None:
    # Run from an empty folder with an empty HOME, so that no stray .hadolint.yaml relaxes it.
    result = subprocess.run(
        [tool("hadolint"), "--format", "json", "--failure-threshold", "warning", str(DOCKERFILE)],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, check=False,
        env={"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)},
    )  # fmt: skip
    findings = json.loads(result.stdout or "[]")
    serious = [f for f in findings if f["level"] in {"warning", "error"}]
    assert not serious, json.dumps(serious, indent=2)
    assert result.returncode == 0, result.stderr


def test_build_stage_syncs_the_locked_venv_without_dev_tools(
    dockerfile: Any, uv_sync_args: list[str]
) -> None:
    assert len(dockerfile.stages) >= 2, "multi-stage: build the venv, then copy it"
    assert {"--locked", "--no-dev", "--no-editable"} <= set(uv_sync_args)
    # Built from this source, not taken from uv's cache (keyed on pyproject.toml only).
    assert "--reinstall-package shelfmark" in " ".join(uv_sync_args)


def runtime_packages(lock: dict[str, Any]) -> set[str]:
    """Shelfmark's locked runtime dependencies, extras included, markers ignored (a superset)."""
    packages = {package["name"]: package for package in lock["package"]}
    needed: set[str] = set()
    todo = [dict(d) for d in packages["shelfmark"]["dependencies"]]
    while todo:
        dependency = todo.pop()
        package = packages[dependency["name"]]
        todo.extend(d for d in package.get("dependencies", []) if d["name"] not in needed)
        for extra in dependency.get("extra", []):
            todo.extend(package["optional-dependencies"][extra])
        needed.add(dependency["name"])
    return needed


def installs(url: str, arch: str) -> bool:
    """Whether the wheel at `url` installs on CPython 3.11, glibc Linux, `arch`."""
    python_tags, abi, platforms = url.rsplit("/", 1)[1].removesuffix(".whl").split("-")[-3:]
    python_ok = bool({"py3", "cp311"} & set(python_tags.split("."))) or (
        abi == "abi3" and python_tags.startswith("cp3") and int(python_tags[3:]) <= 11
    )
    platform_ok = any(
        p == "any" or (p.startswith("manylinux") and p.endswith(arch)) for p in platforms.split(".")
    )
    return python_ok and platform_ok


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_every_runtime_dependency_installs_without_a_compiler(arch: str) -> None:
    """The build stage has no compiler: each dependency needs a wheel for CPython 3.11 on
    glibc Linux (amd64 and arm64 builders)."""
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    packages = {package["name"]: package for package in lock["package"]}
    missing = [
        name
        for name in sorted(runtime_packages(lock))
        if not any(installs(wheel["url"], arch) for wheel in packages[name].get("wheels", []))
    ]
    assert not missing, f"no wheel for CPython 3.11 on Linux {arch}: {missing}"


def test_runtime_stage_has_the_venv_and_nothing_to_compile_with(dockerfile: Any) -> None:
    builder_base = dockerfile.stages[-2].split(" AS ")[0]
    runtime_base = dockerfile.stages[-1].split(" AS ")[0]
    # The venv's interpreter is a symlink to the base image's python: the two must match.
    assert builder_base == runtime_base
    copies = dockerfile.final("COPY")
    assert copies, "the runtime stage copies the venv from the build stage"
    assert all(c.value.startswith("--from=") for c in copies), "no source tree in the runtime"
    runs = " ".join(r.value for r in dockerfile.final("RUN"))
    for compiler in ("gcc", "build-essential", "g++", "clang", "apt-get install", "uv "):
        assert compiler not in runs


def test_runtime_runs_as_an_unprivileged_numeric_user(dockerfile: Any) -> None:
    (user,) = dockerfile.final("USER")
    uid_arg = re.fullmatch(r"\$\{(\w+)\}(:\$\{\w+\})?", user.value)
    if uid_arg:  # USER ${UID}:${UID}: resolve the ARG's default in the final stage
        (arg,) = [a for a in dockerfile.final("ARG") if a.value.startswith(uid_arg.group(1))]
        uid = arg.value.split("=", 1)[1]
    else:
        uid = user.value.split(":")[0]
    # Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
    assert uid.isdigit()
    assert int(uid) >= 1000


def test_runtime_environment(dockerfile: Any) -> None:
    env = dockerfile.env(len(dockerfile.stages) - 1)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["LOG_FORMAT"] == "json"
    assert env["PATH"].startswith("/opt/shelfmark/venv/bin:")


def test_one_image_every_role_serve_by_default(image_command: list[str]) -> None:
    assert image_command[:2] == ["shelfmark", "serve"]
    assert image_command[image_command.index("--host") + 1] == "0.0.0.0"
    assert image_command[image_command.index("--port") + 1] == "8000"


def test_healthcheck_asks_healthz_with_python_not_curl(dockerfile: Any) -> None:
    (healthcheck,) = dockerfile.final("HEALTHCHECK")
    command = healthcheck.exec_form()
    assert command[:2] == ["python", "-c"]
    assert "urllib.request" in command[2]
    assert "http://127.0.0.1:8000/healthz" in command[2]
    # A HEALTHCHECK command that hangs would never mark the container unhealthy.
    assert "timeout=" in command[2]
    assert "--timeout=" in healthcheck.value


# --- .dockerignore ------------------------------------------------------------------------


def _pattern(glob: str) -> re.Pattern[str]:
    """Docker's .dockerignore glob (Go filepath.Match plus `**`) as a regular expression."""
    out = ""
    i = 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif glob.startswith("**", i):
            out, i = out + ".*", i + 2
        elif glob[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif glob[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(glob[i]), i + 1
    return re.compile(out)


def dockerignored(path: str, lines: list[str]) -> bool:
    """Whether Docker leaves `path` out of the build context: the last pattern that matches
    the path or one of its parents decides, `!` re-including."""
    rules = []
    for raw in lines:
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((negated, _pattern(line.lstrip("!").strip("/"))))
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negated, pattern in rules:
        if any(pattern.fullmatch(candidate) for candidate in candidates):
            ignored = not negated
    return ignored


@pytest.fixture(scope="module")
def dockerignore() -> list[str]:
    # The build context is the repository root (docker build -f deploy/Dockerfile .).
    return (ROOT / ".dockerignore").read_text().splitlines()


def test_the_context_has_what_the_dockerfile_copies(
    dockerfile: Any, dockerignore: list[str]
) -> None:
    sources = []
    for copy in (i for i in dockerfile.instructions if i.keyword == "COPY"):
        words = [w for w in copy.value.split() if not w.startswith("--")]
        if copy.value.startswith("--from="):
            continue
        sources.extend(words[:-1])
    assert sources
    for source in sources:
        source_path = ROOT / source
        assert source_path.exists(), source
        files = [source_path] if source_path.is_file() else list(source_path.rglob("*.py"))[:50]
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            assert not dockerignored(relative, dockerignore), f"{relative} is left out"


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        "var/shelfmark.db",
        "var/secret_key",
        ".git/HEAD",
        "deploy/.env",
        "tests/conftest.py",
        "src/shelfmark/__pycache__/app.cpython-311.pyc",
        ".mypy_cache/3.11/cache.db",
    ],
)
def test_the_context_leaves_out_local_state_and_secrets(path: str, dockerignore: list[str]) -> None:
    assert dockerignored(path, dockerignore)


def test_the_dockerignore_matcher_follows_docker() -> None:
    rules = ["*", "!src/", "**/__pycache__", "docs/*.md"]
    assert dockerignored("README.md", rules)
    assert not dockerignored("src/shelfmark/app.py", rules)
    assert dockerignored("src/shelfmark/__pycache__/x.pyc", rules)
    assert not dockerignored("docs/deploy.md", ["docs/*/x.md"])
    assert dockerignored("docs/deploy.md", ["docs/*.md"])
