"""How fast ``cotforge eval`` drives an OpenAI-compatible server, against the ceiling.

The scripted server (:mod:`cotforge.testing.openai_server`) runs in its own process with a fixed
latency per request (200 ms by default) and no concurrency limit, so a perfect client reaches
``concurrency / latency`` questions per second (the ceiling). The evaluation set is 5,000 test
images in the official CUB-200 layout (200 classes x 25 images, 512x512 photo-like JPEGs of
60-100 kB from ``bench_export``'s generator, each file distinct), asked as closed-world
questions from the dataset's own test images (``--source test``), one trial; CUB edits no pixel,
so each file is sent as its own bytes. The server answers every question with the same ~2 kB
rationale.

Two runs, each in its own process (so CPU time and peak memory are its own), one after the
other against the same server:

- ``cotforge eval``: :func:`cotforge.eval.run_eval` end to end: questions planned from the
  layout (every test image hashed), every answer parsed, scored strictly and by text inclusion
  and written to a fresh DuckDB store with its request as it arrives, results read back.
  ``q/s`` is over the asking loop (:attr:`RunFigures.wall_s`); ``end-to-end s`` adds planning
  and the results;
- ``client only`` (the baseline in the same run): the same 5,000 requests sent through the
  same teacher client, nothing parsed, scored or stored: what evaluation adds on top of it.

    .venv/bin/python benchmarks/bench_eval.py [--questions 5000] [--latency 0.2]
        [--concurrency 64]

The last line is ``RESULT eval_ceiling_fraction_c64=<fraction> target>=0.90``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from measure import cpu_s, load_average, peak_rss_mib, print_table, reset_peak_rss

from cotforge.data.annotations import load_annotations
from cotforge.testing.openai_server import start_process

MODEL = "test-model"
DATASET = "cub"
RUNS = ("cotforge eval", "client only")


# --- the evaluation set -------------------------------------------------------------------------


def write_layout(root: Path, questions: int) -> None:
    """``questions`` CUB test images (classes in turn) and the official list files."""
    from bench_export import write_images

    made = write_images(root, DATASET, questions)
    classes = load_annotations(DATASET).classes
    lines = {"images.txt": [], "image_class_labels.txt": [], "train_test_split.txt": []}
    for number, (key, class_index) in enumerate(made, start=1):
        lines["images.txt"].append(f"{number} {key.removeprefix('images/')}")
        lines["image_class_labels.txt"].append(f"{number} {class_index + 1}")
        lines["train_test_split.txt"].append(f"{number} 0")
    lines["classes.txt"] = [f"{c.index + 1} {c.label}" for c in classes]
    for name, rows in lines.items():
        (root / name).write_text("\n".join(rows) + "\n", encoding="utf-8")


def _options(url: str, root: Path, concurrency: int) -> Any:
    from cotforge.config import EvalOptions

    return EvalOptions(
        model=f"openai:{MODEL}@{url}",
        datasets=[DATASET],
        mode="closed",
        source="test",
        data_root=root,
        trials=1,
        concurrency=concurrency,
        max_retries=0,
        timeout_s=60,
    )


# --- the runs (each in a worker process) ---------------------------------------------------------


def run_eval_worker(url: str, root: Path, concurrency: int, store: Path) -> dict[str, Any]:
    from rich.console import Console

    from cotforge.eval import run_eval
    from cotforge.store import Store

    options = _options(url, root, concurrency)
    with Store.open(store) as db:
        reset_peak_rss()
        cpu, wall = cpu_s(), time.perf_counter()
        results = run_eval(db, options, console=Console(quiet=True))
        wall, cpu = time.perf_counter() - wall, cpu_s() - cpu
        stored = db.table("predictions").height
    figures = results.figures
    return {
        "run": RUNS[0],
        "questions": figures.questions,
        "answered": figures.predictions,
        "stored": stored,
        "errors": figures.request_errors,
        "loop_s": figures.wall_s,
        "end_to_end_s": wall,
        "cpu_s": cpu,
        "peak_rss_mib": peak_rss_mib(),
    }


def run_client_worker(url: str, root: Path, concurrency: int) -> dict[str, Any]:
    from cotforge.eval.backends import build_generator, parse_model
    from cotforge.eval.run import load_items, locate, plan_questions

    options = _options(url, root, concurrency)
    spec = parse_model(options.model)
    items = load_items(options, locate(options, default_root=None))
    questions = plan_questions(
        items, model=spec.name, style="fine-r1", modes=["closed"], options=options,
        text_encoder=None,
    )  # fmt: skip
    requests = [q.request for q in questions]
    teacher = build_generator(spec, options)

    async def go() -> int:
        errors = 0
        async for response in teacher.complete(requests):
            errors += not response.ok
        await teacher.aclose()
        return errors

    reset_peak_rss()
    cpu, wall = cpu_s(), time.perf_counter()
    errors = asyncio.run(go())
    wall, cpu = time.perf_counter() - wall, cpu_s() - cpu
    return {
        "run": RUNS[1],
        "questions": len(requests),
        "answered": len(requests) - errors,
        "stored": 0,
        "errors": errors,
        "loop_s": wall,
        "end_to_end_s": wall,
        "cpu_s": cpu,
        "peak_rss_mib": peak_rss_mib(),
    }


# --- orchestration -------------------------------------------------------------------------------


def _worker(run: str, url: str, root: Path, concurrency: int, store: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--worker", run, "--url", url, "--root", str(root)]
    command += ["--concurrency", str(concurrency), "--store", str(store)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        msg = f"{run} failed:\n{done.stderr}"
        raise RuntimeError(msg)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=5000)
    parser.add_argument("--latency", type=float, default=0.2, help="server seconds per request")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--worker", choices=RUNS, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker == RUNS[0]:
        print(json.dumps(run_eval_worker(args.url, args.root, args.concurrency, args.store)))
        return
    if args.worker == RUNS[1]:
        print(json.dumps(run_client_worker(args.url, args.root, args.concurrency)))
        return

    with tempfile.TemporaryDirectory(prefix="bench-eval-") as folder:
        root = Path(folder) / "CUB_200_2011"
        started = time.perf_counter()
        write_layout(root, args.questions)
        print(
            f"{args.questions} closed-world questions on {args.questions} CUB test images "
            f"(written in {time.perf_counter() - started:.0f} s), server latency "
            f"{args.latency * 1000:.0f} ms, concurrency {args.concurrency}; "
            f"load before: {load_average()}"
        )
        server, url = start_process(latency_s=args.latency, model=MODEL)
        try:
            results = [
                _worker(run, url, root, args.concurrency, Path(folder) / f"{n}.duckdb")
                for n, run in enumerate(RUNS)
            ]
        finally:
            server.terminate()
            server.wait(timeout=10)
    ceiling = args.concurrency / args.latency
    rows = []
    for r in results:
        r["rate"] = r["answered"] / r["loop_s"]
        r["fraction"] = r["rate"] / ceiling
        rows.append(
            [
                r["run"],
                str(r["questions"]),
                str(r["stored"]),
                f"{r['loop_s']:.1f}",
                f"{r['end_to_end_s']:.1f}",
                f"{r['rate']:.0f}",
                f"{ceiling:.0f}",
                f"{r['fraction']:.2f}",
                f"{r['cpu_s'] * 1000 / r['questions']:.2f}",
                f"{r['peak_rss_mib']:.0f}",
                str(r["errors"]),
            ]
        )
    print(f"load after: {load_average()}")
    print_table(
        [
            "run",
            "questions",
            "stored",
            "loop s",
            "end-to-end s",
            "q/s",
            "ceiling",
            "of ceiling",
            "CPU ms/q",
            "peak MiB",
            "errors",
        ],
        rows,
    )
    ours, client = results
    print(f"\ncotforge eval / client only (q/s): {ours['rate'] / client['rate']:.2f}")
    print(f"RESULT eval_ceiling_fraction_c64={ours['fraction']:.2f} target>=0.90")


if __name__ == "__main__":
    main()
