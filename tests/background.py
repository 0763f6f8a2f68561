"""Helpers for tests of background work: read a broker's queue, run real worker processes on
a home of their own, make MARC files long enough to interrupt."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from queue import Empty

from kombu import Connection
from pymarc import Field, Record, Subfield

from shelfmark.worker import celery_app


class Broker:
    """A queue as a consumer sees it: what was sent, read back off the broker."""

    def __init__(self, queue: str) -> None:
        self.queue = queue

    def take(self) -> list[tuple[str, list[object]]]:
        """(task name, args) of every message waiting, oldest first; they are consumed."""
        taken: list[tuple[str, list[object]]] = []
        with celery_app.connection_for_read() as connection:
            queue = connection.SimpleQueue(self.queue)
            try:
                while True:
                    try:
                        message = queue.get(block=False)
                    except Empty:
                        break
                    args, _kwargs, _embed = message.decode()
                    taken.append((message.headers["task"], list(args)))
                    message.ack()
            finally:
                queue.close()
        return taken


def delete_queue(broker_url: str, queue: str) -> None:
    with Connection(broker_url) as connection:
        connection.default_channel.queue_delete(queue)


def migrated_database(folder: Path) -> Path:
    """A SQLite database built by `shelfmark migrate` in `folder` (a template to copy)."""
    shelfmark("migrate", env={**os.environ, "SHELFMARK_HOME": str(folder)})
    return folder / "shelfmark.db"


def shelfmark(*args: str, env: dict[str, str], timeout: float = 60) -> str:
    """Run the `shelfmark` command as an operator would; its output, or the test fails."""
    done = subprocess.run(
        [sys.executable, "-m", "shelfmark", *args],
        env=env, capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


class WorkerProcess:
    """`shelfmark worker` in a process group of its own, logging to a file."""

    def __init__(self, env: dict[str, str], log: Path, *args: str) -> None:
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "shelfmark", "worker", "--concurrency", "1", *args],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def kill(self) -> None:
        """SIGKILL to the worker and its pool: a machine that dies, with no goodbye."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def write_marc_bytes(count: int, prefix: str = "bg") -> bytes:
    """Binary MARC21: `count` distinct minimal records."""
    records = []
    for index in range(count):
        record = Record(force_utf8=True)
        record.add_field(Field(tag="001", data=f"{prefix}{index:07d}"))
        record.add_field(Field(tag="003", data="SHELFMARK-TEST"))
        title = Subfield("a", f"Record number {index}")
        record.add_field(Field(tag="245", indicators=["0", "0"], subfields=[title]))
        records.append(record.as_marc())
    return b"".join(records)


def write_marc(path: Path, count: int, prefix: str = "bg") -> Path:
    path.write_bytes(write_marc_bytes(count, prefix))
    return path


# --- processes, as /proc shows them -------------------------------------------------------


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        listed = task / "children"
        found.update(
            int(child) for child in (listed.read_text() if listed.exists() else "").split()
        )
    return found


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children(todo.pop()) - found:
            found.add(child)
            todo.append(child)
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped is not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"
