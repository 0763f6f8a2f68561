"""The OPAC results page against the JSON search it renders, and the page's weight.

    .venv/bin/python bench/web.py [FILE] [--databases postgresql] [--seconds 5]

FILE defaults to ../shared/data/marc/loc-books-2016-sample-10k.mrc, loaded as bench/search.py
loads it (copies at MAIN and EAST, some on loan). The queries are bench/search.py's mix
(titles, words, authors, ISBNs, typos, prefixes, filters, browsing), each sent both as
GET /api/v1/search?...&limit=20 and as GET /search?... (the OPAC page, 20 hits a page).

Server time: wrk with one connection (each request alone: its latency is the server's time
plus a loopback round trip), then with --connections (throughput of the one process: its
inverse is the CPU time a request costs). Goals (issue 8): the page ≤ 3 x the JSON for the
same queries, and the page weight (HTML + CSS + JS as transferred, no images) < 100 KB.

Searches are rate-limited per client address (600 a minute). wrk's requests come from
loopback, so each carries an X-Forwarded-For address of its own (one of 250 made-up
clients), which uvicorn, trusting its loopback proxy, takes as the client: the server is
therefore uvicorn, as behind a reverse proxy in production.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import itertools
import os
import re
import statistics
import subprocess
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from _common import bench_database, served

from search import DEFAULT, load, query_set  # the same catalog and queries

PORT = 8767
CLIENTS = 250
PAGE_SIZE = 20
GOAL_RATIO = 3.0
GOAL_WEIGHT = 100 * 1024
_clients = itertools.count()
ASSET = re.compile(r'<(?:link[^>]*rel="stylesheet"[^>]*href|script[^>]*src)="([^"]+)"')

LUA = """
local paths = {}
for line in io.lines("%(paths)s") do paths[#paths + 1] = line end
local counter = 0
request = function()
  counter = counter + 1
  local client = "10.8." .. (counter %% %(clients)d) .. ".1"
  return wrk.format("GET", paths[(counter %% #paths) + 1], {["X-Forwarded-For"] = client})
end
done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
                 + summary.errors.write + summary.errors.timeout
  io.write(string.format("RESULT %%d %%d %%d %%d %%d %%d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(95), latency.mean, errors))
end
"""


@dataclass
class Run:
    rps: float
    p50_ms: float
    p95_ms: float
    mean_ms: float
    errors: int


def run_wrk(base: str, paths: list[str], *, seconds: int, connections: int, home: Path) -> Run:
    listing = home / f"paths-{abs(hash(tuple(paths)))}.txt"
    listing.write_text("\n".join(paths) + "\n")
    script = home / "web.lua"
    script.write_text(LUA % {"paths": listing, "clients": CLIENTS})
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), base]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    match = re.search(r"RESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", out)
    assert match, out
    requests, duration_us, p50, p95, mean, errors = (int(g) for g in match.groups())
    return Run(requests / (duration_us / 1e6), p50 / 1000, p95 / 1000, mean / 1000, errors)


def fetch(url: str, *, compressed: bool) -> tuple[int, str, bytes]:
    """(status, content-encoding, body as it came over the wire)."""
    client = next(_clients)  # a client of its own, as wrk's requests (rate limit)
    headers = {"Accept": "text/html", "X-Forwarded-For": f"10.9.{client // 250}.{client % 250}"}
    if compressed:
        headers["Accept-Encoding"] = "gzip, br"  # what a browser sends
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
        return r.status, r.headers.get("content-encoding", "identity"), r.read()


def page_paths(api_paths: list[str]) -> list[str]:
    """The OPAC page for each API query: same parameters, the page's own 20 a page."""
    return [path.replace("/api/v1/search?", "/search?", 1) for path in api_paths]


def check(base: str, paths: list[str]) -> None:
    """Every path answers 200 (a benchmark of errors measures nothing)."""
    for path in paths:
        status, _, _ = fetch(base + path, compressed=False)
        assert status == 200, path


def weigh(base: str, paths: list[str]) -> None:
    """HTML + CSS + JS of the result pages as transferred (no images: the OPAC has none)."""
    sizes = [len(fetch(base + path, compressed=True)[2]) for path in paths]
    heaviest = paths[sizes.index(max(sizes))]
    _, encoding, html = fetch(base + heaviest, compressed=True)
    text = gzip.decompress(html).decode() if encoding == "gzip" else html.decode()
    print(f"\npage weight, heaviest of {len(paths)} result pages ({heaviest[:60]}):")
    rows = [(heaviest, encoding, len(html), len(gzip.compress(text.encode())))]
    for asset in dict.fromkeys(ASSET.findall(text)):
        _, asset_encoding, body = fetch(base + asset.replace("&amp;", "&"), compressed=True)
        plain = gzip.decompress(body) if asset_encoding == "gzip" else body
        rows.append((asset, asset_encoding, len(body), len(gzip.compress(plain))))
    print(f"  {'resource':60} {'encoding':>9} {'bytes':>8} {'gzip -6':>8}")
    for name, encoding_, sent, zipped in rows:
        print(f"  {name[:60]:60} {encoding_:>9} {sent:8d} {zipped:8d}")
    total, total_zipped = sum(r[2] for r in rows), sum(r[3] for r in rows)
    print(
        f"  {'total as transferred':60} {'':9} {total:8d} {total_zipped:8d}"
        f"   goal < {GOAL_WEIGHT} ({'met' if total < GOAL_WEIGHT else 'NOT met'})"
    )
    print(
        f"  HTML of the {len(sizes)} pages: median {statistics.median(sizes):.0f} B, "
        f"max {max(sizes)} B as transferred"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", type=Path, default=DEFAULT)
    parser.add_argument("--databases", default="postgresql")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args()

    print(f"file: {args.file.name}; server: uvicorn, 1 process; load average before: "
          f"{' '.join(f'{n:.2f}' for n in os.getloadavg())}")  # fmt: skip
    for database in args.databases.split(","):
        home = Path(tempfile.mkdtemp(prefix="shelfmark-bench-web-"))
        url = bench_database(database, name="shelfmark_bench_web", home=home)
        created = asyncio.run(load(url, home, args.file))
        kinds = asyncio.run(query_set(url, home))
        mixed = [p for group in zip(*kinds.values(), strict=False) for p in group]
        api = [f"{path}&limit={PAGE_SIZE}" if "?" in path else path for path in mixed]
        pages = page_paths(mixed)
        print(f"\n{database}: {created} records imported; {len(mixed)} queries")
        with served(url, server="uvicorn", port=PORT, home=home) as base:
            check(base, api + pages)
            options = {"seconds": args.seconds, "home": home}
            for paths in (api, pages):  # warm up: connections, statement caches
                run_wrk(base, paths, seconds=2, connections=args.connections, home=home)
            print(f"{'connections':>11} {'route':22} {'req/s':>8} {'mean ms':>8} {'p50 ms':>8} "
                  f"{'p95 ms':>8} {'errors':>6}")  # fmt: skip
            for connections in (1, args.connections):
                json_run = run_wrk(base, api, connections=connections, **options)
                page_run = run_wrk(base, pages, connections=connections, **options)
                for name, run in (
                    ("GET /api/v1/search", json_run),
                    ("GET /search (page)", page_run),
                ):
                    print(f"{connections:11d} {name:22} {run.rps:8.0f} {run.mean_ms:8.2f} "
                          f"{run.p50_ms:8.2f} {run.p95_ms:8.2f} {run.errors:6d}")  # fmt: skip
                ratio = json_run.rps / page_run.rps
                print(f"{connections:11d} {'page / JSON':22} {ratio:8.2f}x time a request "
                      f"(p50 {page_run.p50_ms / json_run.p50_ms:.2f}x); goal <= {GOAL_RATIO}x: "
                      f"{'met' if ratio <= GOAL_RATIO else 'NOT met'}")  # fmt: skip
            weigh(base, pages)
    print(f"\nload average after: {' '.join(f'{n:.2f}' for n in os.getloadavg())}")


if __name__ == "__main__":
    main()
