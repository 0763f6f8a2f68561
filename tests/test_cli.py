"""The `shelfmark` command, run as an operator would, on an embedded SQLite home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from shelfmark.cli import app
from shelfmark.settings import get_settings

runner = CliRunner()
DEMO = Path(__file__).resolve().parents[1] / "src" / "shelfmark" / "demo" / "loc-demo.mrc"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("SHELFMARK_HOME", str(tmp_path))
    monkeypatch.delenv("DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def run(*args: str, stdin: str | None = None) -> tuple[int, str]:
    result = runner.invoke(app, list(args), input=stdin)
    return result.exit_code, result.output


def test_help_lists_the_commands() -> None:
    code, out = run("--help")
    assert code == 0
    for command in ("serve", "migrate", "createsuperuser", "demo", "import-marc", "export-marc"):
        assert command in out


def test_migrate_then_createsuperuser_with_flags(home: Path) -> None:
    assert run("migrate")[0] == 0
    assert (home / "shelfmark.db").exists()
    assert (home / "secret_key").exists()
    code, out = run("createsuperuser", "--username", "root", "--password", "a long password")
    assert code == 0, out
    code, out = run("createsuperuser", "--username", "root", "--password", "a long password")
    assert code == 1
    assert "taken" in out


def test_createsuperuser_prompts_when_flags_are_missing(home: Path) -> None:
    run("migrate")
    code, out = run("createsuperuser", stdin="prompted\na long password\na long password\n")
    assert code == 0, out
    assert "User name" in out
    assert "Admin user 'prompted' created" in out
    code, out = run("createsuperuser", "--username", "other", stdin="one password\nanother one\n")
    assert code != 0
    assert "do not match" in out


def test_short_password_is_refused(home: Path) -> None:
    run("migrate")
    code, out = run("createsuperuser", "--username", "x", "--password", "short")
    assert code == 1
    assert "8 characters" in out


def test_import_export_and_json_summary(home: Path, tmp_path: Path) -> None:
    run("migrate")
    code, out = run("import-marc", str(DEMO), "--json")
    assert code == 0, out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["created"] == 400
    assert summary["errors"] == []
    again = json.loads(run("import-marc", str(DEMO), "--json")[1].strip().splitlines()[-1])
    assert (again["created"], again["updated"], again["unchanged"]) == (0, 0, 400)
    target = tmp_path / "out.mrc"
    code, out = run("export-marc", str(target))
    assert code == 0, out
    assert target.read_bytes().count(b"\x1d") == 400
    code, _ = run("export-marc", "--format", "xml", str(tmp_path / "out.xml"))
    assert code == 0
    assert (tmp_path / "out.xml").read_bytes().count(b"<record") == 400


def test_import_of_a_missing_or_foreign_file_fails(home: Path, tmp_path: Path) -> None:
    run("migrate")
    assert run("import-marc", str(tmp_path / "missing.mrc"))[0] == 2
    foreign = tmp_path / "notes.txt"
    foreign.write_text("these are not MARC records\n" * 50)
    assert run("import-marc", str(foreign))[0] == 2


def test_demo_loads_once(home: Path) -> None:
    run("migrate")
    code, out = run("demo")
    assert code == 0, out
    assert "400 titles" in out
    code, out = run("demo")
    assert code == 0
    assert "not loaded again" in out


def test_migrate_and_demo_in_fresh_processes(tmp_path: Path) -> None:
    """As `make run` does it: each command a new process that imports only what it needs."""
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env["SHELFMARK_HOME"] = str(tmp_path)
    for command in (["migrate"], ["demo"], ["import-marc", str(DEMO), "--json"]):
        done = subprocess.run(
            [sys.executable, "-m", "shelfmark", *command], env=env, capture_output=True,
            text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
