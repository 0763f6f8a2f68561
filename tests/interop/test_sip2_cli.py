"""`shelfmark sip2` run as an operator runs it: a real process on an embedded SQLite home, a
self-check that logs in over TCP, and a clean exit on SIGTERM with its connections closed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from background import shelfmark
from shelfmark.cli import app
from shelfmark.interop.sip2.protocol import checksum

STARTS_WITHIN = 60.0
STOPS_WITHIN = 10.0
# Settings a developer's shell may carry: the command must run on its home alone.
HOST_SETTINGS = ("DATABASE_URL", "REDIS_URL", "BROKER_URL", "SECRET_KEY", "SIP2_PORT")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def connect(port: int, process: subprocess.Popen[bytes], log: Path) -> socket.socket:
    deadline = time.monotonic() + STARTS_WITHIN
    while True:
        if process.poll() is not None:
            pytest.fail(f"sip2 exited with {process.returncode}:\n{log.read_text()}")
        try:
            return socket.create_connection(("127.0.0.1", port), timeout=10)
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"sip2 not listening within {STARTS_WITHIN} s:\n{log.read_text()}")
            time.sleep(0.2)


def exchange(connection: socket.socket, text: str, sequence: int) -> str:
    line = f"{text}AY{sequence}AZ".encode()
    connection.sendall(line + checksum(line).encode() + b"\r")
    answer = b""
    while not answer.endswith(b"\r"):
        chunk = connection.recv(4096)
        assert chunk, f"connection closed after {answer!r}"
        answer += chunk
    assert checksum(answer[:-5]) == answer[-5:-1].decode()
    return answer[:-10].decode()


def test_the_command_is_listed_and_documents_its_options() -> None:
    result = CliRunner().invoke(app, ["sip2", "--help"])
    assert result.exit_code == 0
    for option in ("--host", "--port", "--institution", "--encoding", "--idle-timeout"):
        assert option in result.output


def test_an_unknown_encoding_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in HOST_SETTINGS}
    env["SHELFMARK_HOME"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "shelfmark", "sip2", "--encoding", "klingon"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert "klingon" in done.stdout + done.stderr


def test_serves_self_checks_on_sip2_port_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in HOST_SETTINGS}
    port = free_port()
    env |= {"SHELFMARK_HOME": str(tmp_path), "SIP2_PORT": str(port)}
    shelfmark("migrate", env=env)
    shelfmark("createsuperuser", "--username", "kiosk", "--password", "kiosk password", env=env)

    log = tmp_path / "sip2.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "shelfmark", "sip2", "--host", "127.0.0.1",
             "--institution", "CENTRAL"],
            env=env, stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        with connect(port, process, log) as kiosk, connect(port, process, log) as idle:
            assert exchange(kiosk, "9300CNkiosk|COkiosk password|CPMAIN|", 1) == "941"
            status = exchange(kiosk, "9900302.00", 2)
            assert status.startswith("98")
            assert "AOCENTRAL|" in status

            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=STOPS_WITHIN) == 0, log.read_text()
            assert kiosk.recv(10) == b""
            assert idle.recv(10) == b""
        output_text = log.read_text()
        assert f"SIP2 server listening on 127.0.0.1:{port}" in output_text
        assert "SIP2 login of 'kiosk'" in output_text
        assert "kiosk password" not in output_text
        assert "SIP2 server stopped" in output_text
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
