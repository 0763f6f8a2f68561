"""MARC import rate against pymarc's raw parse rate, on SQLite and PostgreSQL; peak memory.

    .venv/bin/python bench/marc_import.py [FILE] [--databases sqlite,postgresql] [--repeat N]

FILE defaults to ../shared/data/marc/loc-books-2016-sample-10k.mrc. For the 250,000-record
LoC file see ../shared/data/marc/README.md. Each import runs in a child process on a fresh
database, so that its peak RSS is its own. Goal (issue 4): import ≥ 40 % of the raw parse
rate on both databases; peak memory under 300 MB for the 250k file.

The raw parse rate is measured again just before each import, and each ratio is against
that one: a shared machine's speed drifts by 10-20 % from minute to minute, more than a
ratio of rates measured minutes apart can bear. Each import runs `--repeat` times (3 by
default); the summary gives the median ratio and the range.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pymarc
from _common import bench_database

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "data" / "marc" / "loc-books-2016-sample-10k.mrc"


def raw_parse_rate(path: Path) -> tuple[int, float]:
    started = time.perf_counter()
    count = 0
    with path.open("rb") as stream:
        reader = pymarc.MARCReader(stream, to_unicode=True, force_utf8=True, permissive=True)
        for record in reader:
            count += record is not None
    return count, count / (time.perf_counter() - started)


def child(path: Path, url: str, home: str) -> None:
    """Run in a child process: migrate, import, print figures as JSON."""
    from shelfmark.auth.roles import SYSTEM  # noqa: PLC0415 - the child imports what it runs
    from shelfmark.db import create_engine, create_sessionmaker  # noqa: PLC0415
    from shelfmark.interop.marc_import import import_file  # noqa: PLC0415
    from shelfmark.migrate import upgrade  # noqa: PLC0415
    from shelfmark.settings import Settings  # noqa: PLC0415

    async def run() -> dict[str, float]:
        settings = Settings(shelfmark_home=Path(home), database_url=url, secret_key="bench")
        engine = create_engine(settings)
        await upgrade(engine)
        started = time.perf_counter()
        summary = await import_file(create_sessionmaker(engine), path, actor=SYSTEM)
        elapsed = time.perf_counter() - started
        await engine.dispose()
        return {"read": summary.read, "created": summary.created, "errors": len(summary.errors),
                "seconds": elapsed}  # fmt: skip

    figures = asyncio.run(run())
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures))


def at_least_one(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return number


def import_once(path: Path, database: str) -> dict[str, float]:
    """One import of `path` into a fresh `database`, in a child process: its figures."""
    home = tempfile.mkdtemp(prefix="shelfmark-bench-")
    url = bench_database(database, name="shelfmark_bench_marc", home=home)
    out = subprocess.run(
        [sys.executable, __file__, str(path), "--child", url, home],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    figures: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--repeat", type=at_least_one, default=3, metavar="N")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.file, *args.child)
        return

    databases = args.databases.split(",")
    print(f"file: {args.file.name}")
    print(
        f"{'database':11} {'raw rec/s':>10} {'records/s':>10} {'ratio':>7} {'created':>8} "
        f"{'errors':>7} {'seconds':>8} {'peak RSS MB':>12}"
    )
    ratios: dict[str, list[float]] = {database: [] for database in databases}
    peaks: dict[str, float] = dict.fromkeys(databases, 0.0)
    for _ in range(args.repeat):
        for database in databases:
            count, raw = raw_parse_rate(args.file)
            figures = import_once(args.file, database)
            rate = figures["read"] / figures["seconds"]
            ratios[database].append(rate / raw)
            peaks[database] = max(peaks[database], figures["peak_rss_mb"])
            print(
                f"{database:11} {raw:10,.0f} {rate:10,.0f} {rate / raw:7.1%} "
                f"{figures['created']:8.0f} {figures['errors']:7.0f} {figures['seconds']:8.1f} "
                f"{figures['peak_rss_mb']:12.0f}",
                flush=True,
            )
    print(
        f"summary of {count} records, over {args.repeat} run(s): median ratio (range), "
        "largest peak RSS"
    )
    for database in databases:
        values = ratios[database]
        print(
            f"{database:11} {statistics.median(values):7.1%} "
            f"({min(values):.1%}-{max(values):.1%}) {peaks[database]:6.0f} MB"
        )


if __name__ == "__main__":
    main()
