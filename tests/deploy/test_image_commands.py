"""The image's commands, run without Docker: a venv built from uv.lock the way the Dockerfile
builds it, the image's environment, then each role's command line exactly as the deploy files
write it, its health check or probe, and a clean exit on SIGTERM (what Docker and Kubernetes
send before SIGKILL)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import CliRunner

from conftest import unreachable
from shelfmark.cli import app

ROOT = Path(__file__).resolve().parents[2]
IMAGE_VENV = "/opt/shelfmark/venv"
IMAGE_HOME = "/var/lib/shelfmark"
READY_WITHIN = 60.0
EXIT_WITHIN = 10.0
# Celery's pidbox channels are prefixed with the database number: this one is the deploy
# tests' own, so that no other test's worker answers the ping.
REDIS_BROKER = "redis://127.0.0.1:6379/10"
# Settings a developer's shell may carry; the image starts with none of them.
HOST_SETTINGS = (
    "DATABASE_URL", "REDIS_URL", "BROKER_URL", "SMTP_URL", "SECRET_KEY", "SHELFMARK_HOME",
    "LOG_FORMAT", "SIP2_PORT", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME",
)  # fmt: skip

# Roles the deploy files run that the CLI does not have yet (none, since `sip2` landed).
# When one lands, its test passes and fails as XPASS(strict): then remove it from here.
PENDING: dict[str, str] = {}
ROLES = ("serve", "migrate", "worker", "beat", "sip2")


def command_lines(
    role: str,
    image_command: list[str],
    compose: dict[str, Any],
    render: Callable[[str], tuple[dict[str, Any], ...]],
    targets: list[str],
) -> list[tuple[str, list[str]]]:
    """Every command line of `role` in the Dockerfile, compose.yaml and the rendered
    kustomizations, with where it was found."""
    found = [("Dockerfile CMD", image_command[1:])]
    for name, service in compose["services"].items():
        if "command" in service and service.get("build"):
            found.append((f"compose {name}", service["command"]))
    found.extend(
        (f"{target} {doc['metadata']['name']}", container["args"])
        for target in targets
        for doc in render(target)
        if doc["kind"] in {"Deployment", "Job"}
        for container in doc["spec"]["template"]["spec"]["containers"]
    )
    return [(where, line) for where, line in found if line[0] == role]


@pytest.mark.parametrize(
    "role",
    [
        pytest.param(role, marks=pytest.mark.xfail(strict=True, reason=PENDING[role]))
        if role in PENDING
        else role
        for role in ROLES
    ],
)
def test_every_deploy_command_line_parses(
    role: str,
    image_command: list[str],
    compose: dict[str, Any],
    render_kustomization: Callable[[str], tuple[dict[str, Any], ...]],
    all_kustomizations: list[str],
) -> None:
    """The CLI has the role, and takes the options the deploy files give it."""
    # overlays/prod includes the optional components (sip2).
    lines = command_lines(role, image_command, compose, render_kustomization, all_kustomizations)
    assert lines, f"no deploy file runs {role}"
    for where, line in lines:
        # --help is answered only once every argument before it has parsed.
        result = CliRunner().invoke(app, [*line, "--help"])
        assert result.exit_code == 0, f"{where}: `shelfmark {shlex.join(line)}`:\n{result.output}"


# --- the image, without Docker --------------------------------------------------------------


def without(names: tuple[str, ...]) -> dict[str, str]:
    """This process's environment less `names` and uv's own settings."""
    return {k: v for k, v in os.environ.items() if k not in names and not k.startswith("UV_")}


@pytest.fixture(scope="session")
def image_venv(
    tmp_path_factory: pytest.TempPathFactory,
    tool: Callable[[str], str],
    dockerfile: Any,
    uv_sync_args: list[str],
) -> Path:
    """/opt/shelfmark/venv of the image: `uv sync` with the build stage's ENV and the
    Dockerfile's own arguments, this Python standing in for the base image's."""
    venv = tmp_path_factory.mktemp("image") / "venv"
    env = without(("VIRTUAL_ENV",)) | dockerfile.env(len(dockerfile.stages) - 2)
    assert env["UV_PROJECT_ENVIRONMENT"] == IMAGE_VENV
    env |= {"UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON": sys.executable}
    # Compiling every module of the venv costs more than the rest of these tests; the
    # processes below write the bytecode of what they import instead (see image_env).
    env.pop("UV_COMPILE_BYTECODE")
    result = subprocess.run(
        [tool("uv"), "sync", *uv_sync_args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"uv sync {shlex.join(uv_sync_args)}:\n{result.stderr}"
    return venv


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """/var/lib/shelfmark of one container."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def relocated(value: str, moves: dict[str, str]) -> str:
    for old, new in moves.items():
        value = value.replace(old, new)
    return value


@pytest.fixture
def image_env(dockerfile: Any, image_venv: Path, home: Path) -> dict[str, str]:
    """This process's environment without Shelfmark's settings, plus the image's ENV with its
    paths moved into the test's folders."""
    env = without(HOST_SETTINGS)
    moves = {"$PATH": env.get("PATH", ""), IMAGE_VENV: str(image_venv), IMAGE_HOME: str(home)}
    for name, value in dockerfile.env(len(dockerfile.stages) - 1).items():
        env[name] = relocated(value, moves)
    # The image's venv is compiled at build time (UV_COMPILE_BYTECODE) and written to never
    # again. Compiling all of it here would cost more than this test; letting the first
    # process write the bytecode it imports gives the later ones the same warm start.
    env.pop("PYTHONDONTWRITEBYTECODE")
    return env


def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def start(home: Path, image_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start a role as the container's main process; whatever is left is killed at the end."""
    started: list[subprocess.Popen[bytes]] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> Process:
        log = tmp_path / f"{args[1]}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                args, cwd=home, env=env or image_env, stdout=output, stderr=subprocess.STDOUT
            )
        started.append(process)
        return Process(process, log, json_logs=(env or image_env).get("LOG_FORMAT") == "json")

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


class Process:
    def __init__(self, popen: subprocess.Popen[bytes], log: Path, *, json_logs: bool) -> None:
        self.popen = popen
        self.log = log
        self.json_logs = json_logs

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> None:
        if self.popen.poll() is not None:
            pytest.fail(f"exited with {self.popen.returncode}:\n{self.output()}")

    def says(self, text: str) -> None:
        """Wait until the process has logged `text`."""
        deadline = time.monotonic() + READY_WITHIN
        while text not in self.output():
            self.alive()
            if time.monotonic() > deadline:
                pytest.fail(f"never said {text!r} in {READY_WITHIN} s:\n{self.output()}")
            time.sleep(0.2)

    def stops_on_sigterm(self) -> None:
        """SIGTERM, as `docker stop` and the kubelet send it: a clean exit in time."""
        self.popen.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            code = self.popen.wait(timeout=EXIT_WITHIN)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {EXIT_WITHIN} s after SIGTERM:\n{self.output()}")
        assert code == 0, f"exit {code} after SIGTERM:\n{self.output()}"
        assert time.monotonic() - started < EXIT_WITHIN
        if self.json_logs:
            self.logged_json_only()

    def logged_json_only(self) -> None:
        """With LOG_FORMAT=json (the image's setting) a log collector can parse every line
        the role wrote, from its start to its shutdown, stdout and stderr alike."""
        lines = [line for line in self.output().splitlines() if line.strip()]
        assert lines, "the role logged nothing"
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                pytest.fail(f"not a JSON line: {line!r}\n{self.output()}")
            assert {"at", "level", "logger", "message"} <= entry.keys(), line


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(url: str, process: Process) -> dict[str, Any]:
    deadline = time.monotonic() + READY_WITHIN
    while time.monotonic() < deadline:
        process.alive()
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return dict(json.loads(response.read()))
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    pytest.fail(f"{url} not ready within {READY_WITHIN} s:\n{process.output()}")


def processes_from(venv: Path) -> list[str]:
    """Command lines of the processes still running from `venv`: orphans of a role."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if any(str(venv).encode() in word for word in words):
            found.append(b" ".join(words).decode(errors="replace"))
    return found


def test_the_venv_is_built_like_the_image(
    image_venv: Path, image_env: dict[str, str], home: Path
) -> None:
    # --no-dev: no test tools. --no-editable: Shelfmark installed from this very source.
    assert not (image_venv / "bin" / "pytest").exists()
    located = run(["python", "-c", "import shelfmark; print(shelfmark.__file__)"], image_env, home)
    installed = Path(located.stdout.strip()).parent
    assert installed.is_relative_to(image_venv), located.stderr
    for module in ("cli.py", "app.py", "health.py"):
        assert (installed / module).read_bytes() == (ROOT / "src/shelfmark" / module).read_bytes()


def test_the_default_command_serves_a_whole_library_and_stops_on_sigterm(
    image_command: list[str],
    compose: dict[str, Any],
    dockerfile: Any,
    image_env: dict[str, str],
    image_venv: Path,
    home: Path,
    start: Callable[..., Process],
) -> None:
    """`docker run IMAGE migrate`, then `docker run IMAGE`: the API with its embedded worker
    and beat, on SQLite in SHELFMARK_HOME."""
    migrated = run(["shelfmark", *compose["services"]["migrate"]["command"]], image_env, home)
    assert migrated.returncode == 0, migrated.stderr

    # The image's default command, on loopback and a free port instead of 0.0.0.0:8000.
    port = free_port()
    serve = list(image_command)
    serve[serve.index("--host") + 1] = "127.0.0.1"
    serve[serve.index("--port") + 1] = str(port)
    server = start(serve)
    ready = wait_ready(f"http://127.0.0.1:{port}/readyz", server)
    assert ready["status"] == "ready"

    (healthcheck,) = dockerfile.final("HEALTHCHECK")
    check = [word.replace(":8000/", f":{port}/") for word in healthcheck.exec_form()]
    checked = run(check, image_env, home)
    assert checked.returncode == 0, checked.stderr

    server.stops_on_sigterm()
    # The embedded worker and beat went with it: a container's PID 1 leaves no orphan.
    deadline = time.monotonic() + EXIT_WITHIN
    while processes_from(image_venv) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_from(image_venv)


@pytest.fixture
def redis_broker(image_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The image's environment on a Redis broker, with a queue of this test's own: a message
    left behind reaches no other worker. The queue's keys are deleted afterwards."""
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=2).close()
    except OSError:
        reason = "Redis at 127.0.0.1:6379 is unreachable"
        unreachable(reason)
    queue = f"deploy-{uuid.uuid4().hex}"
    yield image_env | {"BROKER_URL": REDIS_BROKER, "JOBS_QUEUE": queue}
    client = redis.Redis.from_url(REDIS_BROKER)
    try:
        for key in client.scan_iter(match=f"*{queue}*"):
            client.delete(key)
    finally:
        client.close()


def test_worker_and_beat_roles_answer_their_probe_and_stop_warm(
    render_kustomization: Callable[[str], tuple[dict[str, Any], ...]],
    home: Path,
    redis_broker: dict[str, str],
    start: Callable[..., Process],
) -> None:
    """The worker and beat Deployments' containers, on a Redis broker as in production, with
    the worker's liveness probe run exactly as the kubelet runs it."""
    docs = render_kustomization("base")
    pods = {
        doc["metadata"]["labels"]["app.kubernetes.io/component"]: doc["spec"]["template"]["spec"]
        for doc in docs
        if doc["kind"] == "Deployment"
    }
    (worker,) = pods["worker"]["containers"]
    (beat,) = pods["beat"]["containers"]
    env = redis_broker
    assert run(["shelfmark", "migrate"], env, home).returncode == 0

    worker_process = start(["shelfmark", *worker["args"]], env)
    beat_process = start(["shelfmark", *beat["args"]], env)
    # In a pod HOSTNAME is the pod's name, which is also the worker's node name.
    probe_env = env | {"HOSTNAME": socket.gethostname()}
    probe = worker["livenessProbe"]["exec"]["command"]
    # Probing before Celery says it is ready only waits out the probe's own timeout.
    worker_process.says(" ready.")
    deadline = time.monotonic() + READY_WITHIN
    while True:
        worker_process.alive()
        answered = run(probe, probe_env, home)
        if answered.returncode == 0:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"the liveness probe never passed:\n{answered.stdout}{answered.stderr}")
        time.sleep(1)

    beat_process.says("beat: Starting...")
    worker_process.stops_on_sigterm()
    beat_process.stops_on_sigterm()


def test_the_sip2_role_answers_its_health_check_and_stops_on_sigterm(
    compose: dict[str, Any],
    render_kustomization: Callable[[str], tuple[dict[str, Any], ...]],
    image_env: dict[str, str],
    home: Path,
    start: Callable[..., Process],
) -> None:
    """The Compose `sip2` service's command and health check (moved to a free port through
    SIP2_PORT); the Kubernetes component runs the same command and probes the same port."""
    service = compose["services"]["sip2"]
    (sip2,) = [
        container
        for doc in render_kustomization("overlays/prod")
        if doc["kind"] == "Deployment" and doc["metadata"]["name"].endswith("sip2")
        for container in doc["spec"]["template"]["spec"]["containers"]
    ]
    assert sip2["args"] == service["command"]
    assert [p["containerPort"] for p in sip2["ports"]] == [6001]
    port = free_port()
    env = image_env | {"SIP2_PORT": str(port)}
    assert run(["shelfmark", "migrate"], env, home).returncode == 0

    server = start(["shelfmark", *service["command"]], env)
    check = [word.replace("6001", str(port)) for word in service["healthcheck"]["test"][1:]]
    deadline = time.monotonic() + READY_WITHIN
    while True:
        server.alive()
        checked = run(check, env, home)
        if checked.returncode == 0:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"the health check never passed:\n{checked.stderr}\n{server.output()}")
        time.sleep(0.5)
    server.stops_on_sigterm()
