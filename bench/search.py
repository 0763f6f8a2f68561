"""Search latency and throughput against the server's own ceiling, on PostgreSQL and SQLite.

    .venv/bin/python bench/search.py [FILE] [--databases postgresql,sqlite] [--seconds 10]

FILE defaults to ../shared/data/marc/loc-books-2016-sample-10k.mrc; for the 250,000-record
LoC file see ../shared/data/marc/README.md. For each database: a fresh database, the file
imported (one copy per record at MAIN, a second copy at EAST for every third record, every
fourth MAIN copy on loan), then `shelfmark serve` (one process) measured with wrk on
loopback: GET /healthz (the ceiling: the same server doing no database work), then a mixed
set of GET /api/v1/search requests drawn from the imported records — exact titles, title
words, author + title word, ISBNs (10 and 13, hyphenated), one-typo words, prefixes, words
with filters, and browsing by filters — every response with its total and five facets.

Search pages are cached (until the catalog changes), so each query is measured twice: its
first read, one at a time (a cache miss: the search itself, latency per kind), then with wrk,
the mix and each kind alone, once the cache holds every page (a hit still reads the page's
availability from the database). Goals (issue 7): the mix ≥ 10 % of the ceiling on
PostgreSQL; p95 ≤ 4 x p50. On PostgreSQL the import is followed by VACUUM ANALYZE, as
autovacuum would do soon after; `--reuse` searches the database the last run loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import subprocess
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from _common import PG_ADMIN, ROOT, bench_database, served
from sqlalchemy import func, insert, select, update

from shelfmark.auth.roles import SYSTEM
from shelfmark.catalog import isbn as isbn_rules
from shelfmark.catalog.models import Bib, Branch, Item
from shelfmark.db import create_engine, create_sessionmaker, session_scope, utcnow
from shelfmark.interop.marc_import import import_file
from shelfmark.migrate import upgrade
from shelfmark.settings import Settings

DEFAULT = ROOT.parent / "shared" / "data" / "marc" / "loc-books-2016-sample-10k.mrc"
PORT = 8766
QUERIES_PER_KIND = 60
KINDS = ("exact", "words", "author", "isbn", "typo", "prefix", "filtered", "browse")
WORD = re.compile(r"[^\W\d_]{4,}")

LUA = """
local paths = {}
for line in io.lines("%(paths)s") do paths[#paths + 1] = line end
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter %% #paths) + 1])
end
done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
                 + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), errors))
end
"""


@dataclass
class Result:
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int


def run_wrk(base: str, paths: list[str], *, seconds: int, connections: int, home: Path) -> Result:
    listing = home / f"paths-{len(paths)}-{abs(hash(tuple(paths)))}.txt"
    listing.write_text("\n".join(paths) + "\n")
    script = home / "paths.lua"
    script.write_text(LUA % {"paths": listing})
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), base]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out)
    assert match, out
    requests, duration_us, p50, p95, p99, errors = (int(g) for g in match.groups())
    return Result(requests / (duration_us / 1e6), p50 / 1000, p95 / 1000, p99 / 1000, errors)


# --- the catalog ------------------------------------------------------------------------


async def load(url: str, home: Path, source: Path) -> int:
    settings = Settings(shelfmark_home=home, database_url=url, secret_key="bench" * 8)
    engine = create_engine(settings)
    await upgrade(engine)
    maker = create_sessionmaker(engine)
    async with session_scope(maker) as session:
        now = utcnow()
        session.add_all(
            Branch(code=code, name=code.title(), opening_hours={}, created_at=now, updated_at=now)
            for code in ("MAIN", "EAST")
        )
    summary = await import_file(maker, source, actor=SYSTEM, items_branch="MAIN")
    async with session_scope(maker) as session:
        east = await session.scalar(select(Branch.id).where(Branch.code == "EAST"))
        ids = (await session.scalars(select(Bib.id).order_by(Bib.id))).all()
        rows = [
            {"bib_id": bib_id, "barcode": f"E{bib_id:09d}", "branch_id": east,
             "status": "available", "item_type": "book", "created_at": now, "updated_at": now}
            for bib_id in ids[::3]
        ]  # fmt: skip
        await session.execute(insert(Item), rows)
        await session.execute(
            update(Item).where(Item.barcode.like("SM%"), Item.id % 4 == 0).values(status="on_loan")
        )
    await engine.dispose()
    if url.startswith("postgresql"):
        connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            await connection.execute("VACUUM ANALYZE")
        finally:
            await connection.close()
    return summary.created


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    return word[:i] + word[i + 1] + word[i] + word[i + 2 :]


async def query_set(url: str, home: Path) -> dict[str, list[str]]:
    """Paths of each kind, drawn from the imported records (same seed, same paths)."""
    settings = Settings(shelfmark_home=home, database_url=url, secret_key="bench" * 8)
    engine = create_engine(settings)
    async with engine.connect() as connection:
        count = await connection.scalar(select(func.count()).select_from(Bib)) or 0
        rng = random.Random(42)
        picks = sorted(rng.sample(range(count), min(count, 4 * QUERIES_PER_KIND)))
        columns = (Bib.title, Bib.contributors, Bib.isbns, Bib.language)
        rows = (await connection.execute(select(*columns).order_by(Bib.id))).all()
    await engine.dispose()
    chosen = [rows[i] for i in picks]
    queries: dict[str, list[dict[str, str]]] = {kind: [] for kind in KINDS}
    for title, contributors, isbns, language in chosen:
        words = WORD.findall(title)
        queries["exact"].append({"q": title})
        if len(words) >= 2:
            queries["words"].append({"q": " ".join(rng.sample(words, 2))})
            queries["prefix"].append({"q": f"{words[0]} {words[1][: max(3, len(words[1]) // 2)]}"})
        if contributors and words:
            surname = contributors[0]["name"].split(",")[0]
            queries["author"].append({"q": f"{surname} {rng.choice(words)}"})
        if isbns:
            isbn13 = isbns[0]
            isbn10 = isbn_rules.to_isbn10(isbn13)
            text = f"{isbn10[:1]}-{isbn10[1:4]}-{isbn10[4:9]}-{isbn10[9:]}" if isbn10 and \
                rng.random() < 0.5 else f"{isbn13[:3]}-{isbn13[3:]}"  # fmt: skip
            queries["isbn"].append({"q": text})
        long_words = [w for w in words if len(w) >= 5]
        if long_words:
            queries["typo"].append({"q": _typo(rng.choice(long_words).lower(), rng)})
        if words:
            filters = rng.choice(
                [{"language": language or "eng"}, {"year_from": "1990", "year_to": "2010"},
                 {"available": "true"}, {"branch": "EAST"}]
            )  # fmt: skip
            queries["filtered"].append({"q": rng.choice(words)} | filters)
        queries["browse"].append(
            {"language": language or "eng", "available": "true"}
            | ({"branch": "EAST"} if rng.random() < 0.5 else {})
        )
    return {
        kind: [
            "/api/v1/search?" + urllib.parse.urlencode(params)
            for params in values[:QUERIES_PER_KIND]
        ]
        for kind, values in queries.items()
    }


def first_reads(base: str, paths: dict[str, list[str]]) -> dict[str, list[float]]:
    """Each path once, one at a time: every one answers 200 (a benchmark of errors measures
    nothing), and its time is that of a search the cache has not seen (milliseconds)."""
    import urllib.request  # noqa: PLC0415

    times: dict[str, list[float]] = {}
    for kind, group in paths.items():
        for path in group:
            start = time.perf_counter()
            with urllib.request.urlopen(base + path, timeout=60) as response:
                body = json.loads(response.read())
            times.setdefault(kind, []).append((time.perf_counter() - start) * 1000)
            assert response.status == 200, path
            assert "facets" in body, path
    return times


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--databases", default="postgresql,sqlite")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--kind-seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--server", default="granian")
    parser.add_argument(
        "--reuse", action="store_true",
        help="search the database the last run loaded, without importing again",
    )  # fmt: skip
    args = parser.parse_args()

    source = "the database of the last run" if args.reuse else args.file.name
    print(f"file: {source}; server: {args.server}, 1 process; wrk -t1 "
          f"-c{args.connections}")  # fmt: skip
    header = (f"{'database':10} {'requests':26} {'req/s':>8} {'ratio':>7} {'p50 ms':>8} "
              f"{'p95 ms':>8} {'p99 ms':>8} {'p95/p50':>8} {'errors':>6}")  # fmt: skip
    for database in args.databases.split(","):
        home = Path(tempfile.mkdtemp(prefix="shelfmark-bench-search-"))
        if args.reuse and database == "postgresql":
            url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
            url += "/shelfmark_bench_search"
            created = 0
        elif args.reuse:  # the newest SQLite file an earlier run left
            earlier = Path(tempfile.gettempdir()).glob("shelfmark-bench-search-*/bench.db")
            url = f"sqlite+aiosqlite:///{max(earlier, key=lambda p: p.stat().st_mtime)}"
            created = 0
        else:
            url = bench_database(database, name="shelfmark_bench_search", home=home)
            created = asyncio.run(load(url, home, args.file))
        paths = asyncio.run(query_set(url, home))
        mixed = [p for group in zip(*paths.values(), strict=False) for p in group]
        print(f"\n{database}: {created or 'reused:'} records imported; {len(mixed)} mixed queries")
        with served(url, server=args.server, port=PORT, home=home) as base:
            first = first_reads(base, paths)
            print("first reads (cache misses), one at a time:")
            print(f"{'database':10} {'kind':10} {'queries':>8} {'p50 ms':>8} {'p95 ms':>8} "
                  f"{'max ms':>8}")  # fmt: skip
            for kind, times in [*first.items(), ("all", [t for ts in first.values() for t in ts])]:
                print(f"{database:10} {kind:10} {len(times):8d} {_percentile(times, 0.5):8.1f} "
                      f"{_percentile(times, 0.95):8.1f} {max(times):8.1f}")  # fmt: skip
            print("throughput with wrk (the cache holds every page now):")
            print(header)
            options = {"connections": args.connections, "home": home}
            run_wrk(base, ["/healthz"], seconds=2, **options)  # warm up
            ceiling = run_wrk(base, ["/healthz"], seconds=args.seconds, **options)
            run_wrk(base, mixed, seconds=2, **options)  # warm up

            def hits(group: list[str], seconds: int, options: dict[str, Any] = options) -> Result:
                # The embedded cache expires entries after 30 s: fill it again first, so
                # that what wrk measures is hits (the misses are the table above).
                first_reads(base, {"all": group})
                return run_wrk(base, group, seconds=seconds, **options)

            cases = [
                ("GET /healthz (ceiling)", ceiling),
                ("search: mixed", hits(mixed, args.seconds)),
            ]
            cases += [(f"search: {kind}", hits(paths[kind], args.kind_seconds)) for kind in KINDS]
            for name, result in cases:
                spread = result.p95_ms / result.p50_ms if result.p50_ms else float("nan")
                print(
                    f"{database:10} {name:26} {result.rps:8.0f} {result.rps / ceiling.rps:7.1%} "
                    f"{result.p50_ms:8.2f} {result.p95_ms:8.2f} {result.p99_ms:8.2f} "
                    f"{spread:8.1f} {result.errors:6d}"
                )


if __name__ == "__main__":
    main()
