"""`shelfmark serve` runs a worker and beat as its children (embedded mode), and none of them
outlives it, however it stops."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from background import alive, cmdline, descendants, migrated_database


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return migrated_database(tmp_path_factory.mktemp("migrated"))


@contextmanager
def serving(
    home: Path, *options: str, database: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`shelfmark serve` on a free port (on a copy of `database`), once it answers /healthz."""
    env = {**os.environ, "SHELFMARK_HOME": str(home)}
    for name in ("DATABASE_URL", "BROKER_URL", "REDIS_URL"):
        env.pop(name, None)
    if database is not None:
        shutil.copyfile(database, home / "shelfmark.db")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with (home / "serve.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "shelfmark", "serve", "--server", "uvicorn",
             "--port", str(port), *options],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _answers(f"http://127.0.0.1:{port}/healthz"):
            assert process.poll() is None, (home / "serve.log").read_text()
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.1)
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def _worker_and_beat(pids: set[int]) -> bool:
    commands = [cmdline(pid) for pid in pids]
    # the worker, its pool process (a fork: same command line) and beat
    return sum(" worker " in c for c in commands) >= 2 and any(
        c.endswith(" beat ") for c in commands
    )


class TestServe:
    @pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
    def test_the_worker_and_beat_stop_with_serve(
        self, tmp_path: Path, database: Path, stop: int
    ) -> None:
        with serving(tmp_path, database=database) as server:
            deadline = time.monotonic() + 60
            while not _worker_and_beat(children := descendants(server.pid)):
                assert time.monotonic() < deadline, [cmdline(pid) for pid in children]
                time.sleep(0.1)
            server.send_signal(stop)
            server.wait(timeout=60)
        lingering = [cmdline(pid) for pid in children if alive(pid)]
        assert lingering == []

    def test_no_worker_starts_none(self, tmp_path: Path) -> None:
        with serving(tmp_path, "--no-worker") as server:
            assert descendants(server.pid) == set()


class TestSupervisor:
    def test_children_die_with_a_supervisor_killed_outright(self) -> None:
        sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
        script = (
            "import time\n"
            "from shelfmark.cli import _supervised\n"
            f"with _supervised([{sleeper!r}]):\n"
            "    print('up', flush=True)\n"
            "    time.sleep(120)\n"
        )
        with subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
        ) as supervisor:
            try:
                assert supervisor.stdout is not None
                assert supervisor.stdout.readline().strip() == "up"
                started = descendants(supervisor.pid)
                assert len(started) == 1
            finally:
                supervisor.kill()  # no goodbye: only the kernel can stop the child now
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in started):
            assert time.monotonic() < deadline, "the child outlived its supervisor"
            time.sleep(0.05)
