"""How fast the store records teacher calls, and how much memory that takes.

Writes 100,000 finished requests, each with its rationale, through the public ``Store`` API in
batches of 1,000 (``add_request_results``, as ``generate`` does), then reads them back as one
polars frame (``request_results``, the join of rationales and requests). Text sizes are realistic:
a ~3 kB teacher response (stored once: the rationale's raw text is the response), analysis and
comparison of 0.5-1 kB each, four candidate names and a short prediction.

Baseline, in the same run: the same kind of rows inserted one by one with DuckDB's
``executemany`` (what a naive store would do) on 2,000 pairs, compared as pairs/s. Each phase runs
in its own process so its peak RSS (``ru_maxrss``) is its own; only the Store calls are timed, not
making the rows.

    .venv/bin/python benchmarks/bench_store.py [--rows 100000] [--batch 1000]

The last line is ``RESULT store_write_seconds_100k=<seconds> target<10``.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
from measure import peak_rss_mib

from cotforge.store import Store

_CLASSES = ["Boeing 737-800", "Airbus A320", "Embraer E-190", "Boeing 757-200", "ATR-72"]


def _text_pool(rng: random.Random, size: int) -> str:
    """A long pseudo-English string; fields are slices of it, so making rows costs little.

    Words come from a 5,000-word made-up vocabulary drawn with Zipf frequencies, so the text
    compresses about as well as English does (a tiny vocabulary would flatter the store).
    """
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    vocabulary = [
        "".join(rng.choices(letters, weights=range(26, 0, -1), k=rng.randint(2, 10)))
        for _ in range(5_000)
    ]
    weights = [1 / rank for rank in range(1, len(vocabulary) + 1)]
    words = rng.choices(vocabulary, weights=weights, k=size // 6)
    return " ".join(words)


def _text(rng: random.Random, pool: str, low: int, high: int) -> str:
    n = rng.randint(low, high)
    start = rng.randrange(len(pool) - n)
    return pool[start : start + n]


def _batch(
    rng: random.Random, pool: str, run_id: str, start: int, count: int
) -> tuple[list[dict], list[dict]]:
    """``count`` finished requests starting at ``start``, each with one rationale."""
    requests, rationales = [], []
    for i in range(start, start + count):
        request_id = f"req-{i:08d}"
        sample_id = f"aircraft/train/data/images/{i:07d}.jpg"
        response = _text(rng, pool, 2800, 3200)
        label = _CLASSES[i % len(_CLASSES)]
        requests.append(
            {
                "request_id": request_id,
                "run_id": run_id,
                "sample_id": sample_id,
                "purpose": "rationale",
                "model": "Qwen/Qwen2.5-VL-32B-Instruct",
                "prompt_hash": f"{i % 97:064x}",
                "attempt": 0,
                "params": {"temperature": 0.7, "top_p": 0.9, "max_tokens": 2048},
                "status": "ok",
                "response_text": response,
                "latency_s": 3.2,
                "prompt_tokens": 1450,
                "completion_tokens": 780,
                "cost_usd": 0.0021,
            }
        )
        rationales.append(
            {
                "rationale_id": f"rat-{i:08d}",
                "request_id": request_id,
                "sample_id": sample_id,
                "analysis": _text(rng, pool, 500, 1000),
                "candidates": rng.sample(_CLASSES, 4),
                "comparison": _text(rng, pool, 500, 1000),
                "prediction": label,
            }
        )
    return requests, rationales


def write_phase(path: Path, rows: int, batch: int) -> dict:
    """Write ``rows`` request+rationale pairs through the Store API; only Store calls are timed."""
    rng = random.Random(0)
    pool = _text_pool(rng, 2_000_000)
    started = time.perf_counter()
    store = Store.open(path)
    run_id = store.start_run("generate", {"bench": True}, {"cotforge": "bench"})
    seconds = time.perf_counter() - started
    for start in range(0, rows, batch):
        requests, rationales = _batch(rng, pool, run_id, start, min(batch, rows - start))
        tick = time.perf_counter()
        store.add_request_results(requests, rationales)
        seconds += time.perf_counter() - tick
    tick = time.perf_counter()
    store.close()  # includes the final checkpoint, so it is part of the write cost
    seconds += time.perf_counter() - tick
    return {"seconds": seconds, "rss": peak_rss_mib(), "file_mib": path.stat().st_size / 2**20}


def read_phase(path: Path, rows: int) -> dict:
    """Read every rationale joined with its request back as one polars frame."""
    started = time.perf_counter()
    with Store.open(path, read_only=True) as store:
        frame = store.request_results()
    seconds = time.perf_counter() - started
    if frame.height != rows:
        msg = f"read back {frame.height} rows, wrote {rows}"
        raise RuntimeError(msg)
    return {"seconds": seconds, "rss": peak_rss_mib(), "frame_mib": frame.estimated_size() / 2**20}


def executemany_phase(path: Path, rows: int) -> dict:
    """Insert ``rows`` pairs one row at a time (the naive way), in one transaction."""
    rng = random.Random(1)
    pool = _text_pool(rng, 2_000_000)
    with Store.open(path) as store:  # creates the schema
        run_id = store.start_run("generate", {"bench": True}, {"cotforge": "bench"})
    requests, rationales = _batch(rng, pool, run_id, 0, rows)
    for request in requests:
        request["params"] = json.dumps(request["params"])
    con = duckdb.connect(str(path))
    started = time.perf_counter()
    con.begin()
    for table, records in (("requests", requests), ("rationales", rationales)):
        names = list(records[0])
        sql = f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        con.executemany(sql, [[record[n] for n in names] for record in records])
    con.commit()
    con.close()
    return {"seconds": time.perf_counter() - started, "rss": peak_rss_mib()}


PHASES = {"write": write_phase, "read": read_phase, "executemany": executemany_phase}


def _run_phase(phase: str, path: Path, *args: int) -> dict:
    """Run one phase in a fresh interpreter, so each peak RSS is that phase's own."""
    command = [sys.executable, __file__, "--phase", phase, str(path), *map(str, args)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="request+rationale pairs")
    parser.add_argument("--batch", type=int, default=1_000, help="pairs per Store call")
    parser.add_argument("--baseline-rows", type=int, default=2_000, help="pairs for executemany")
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:  # child process: PHASE PATH ARGS...
        phase, path, *numbers = args.phase
        print(json.dumps(PHASES[phase](Path(path), *map(int, numbers))))
        return

    with tempfile.TemporaryDirectory() as tmp:
        store_path, naive_path = Path(tmp, "store.duckdb"), Path(tmp, "naive.duckdb")
        naive = _run_phase("executemany", naive_path, args.baseline_rows)
        write = _run_phase("write", store_path, args.rows, args.batch)
        read = _run_phase("read", store_path, args.rows)

    naive_rate = args.baseline_rows / naive["seconds"]
    write_rate = args.rows / write["seconds"]
    table = [
        ("executemany, row by row (baseline)", args.baseline_rows, naive, 1.0),
        (
            f"Store.add_request_results, {args.batch:,}/call",
            args.rows,
            write,
            write_rate / naive_rate,
        ),
        ("Store.request_results -> one polars frame", args.rows, read, None),
    ]
    header = (
        f"{'phase':<44} {'pairs':>8} {'seconds':>8} {'pairs/s':>9} {'peak RSS MiB':>13} "
        f"{'x base':>7}"
    )
    print(header)
    print("-" * len(header))
    for label, rows, result, ratio in table:
        shown = f"{ratio:>7.1f}" if ratio is not None else f"{'':>7}"
        print(
            f"{label:<44} {rows:>8,} {result['seconds']:>8.2f} {rows / result['seconds']:>9,.0f} "
            f"{result['rss']:>13,.0f} {shown}"
        )
    print(
        f"one pair = a request (~3 kB response) + its rationale (~2 kB of parsed stages; its raw "
        f"text is the response, stored once); store file {write['file_mib']:,.0f} MiB, frame "
        f"read back {read['frame_mib']:,.0f} MiB; each phase runs in its own process"
    )
    scale = 100_000 / args.rows
    print(f"RESULT store_write_seconds_100k={write['seconds'] * scale:.2f} target<10")


if __name__ == "__main__":
    main()
