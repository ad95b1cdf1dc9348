"""How fast ``cotforge export`` writes the sft config, and whether its memory stays flat.

Builds a store of N curated records straight through the ``Store`` writers (a plan run that
names the image root, images, samples, rationale requests with ~3 kB teacher answers in the
tagged format built from the real Fine-R1 records, their rationales and passing verdicts), over
N distinct 512x512 JPEG files in the official CUB-200 layout. The pictures are generated, not
flat: smooth random colour fields with shapes, edges and sensor-like noise, JPEG quality 90
(60-100 kB each, like photos of that size); 200 distinct pictures are drawn and each file gets
its own comment segment, so every file's bytes differ without paying 20,000 encodes.

Phases, each in its own process so its peak RSS is its own (Linux ``VmHWM``, reset after the
imports and the store are open, so the figure is what the export itself adds):

- ``export 5k`` and ``export 20k``: ``run_export`` of the sft config (CUB changes no pixel, so
  the files' own bytes are embedded); MB/s is the folder's bytes over the call's wall time.
  Peak memory at 5k and 20k shows whether it grows with the number of records.
- ``plain pyarrow``: the baseline in the same run: the same image bytes and texts written with
  a default ``pyarrow.parquet.ParquetWriter`` in batches of 100 rows (reading the files
  included, no rendering, no store), the ceiling for this disk and CPU.
- ``export aircraft``: FGVC-Aircraft's re-encoding path (decode, crop the banner, JPEG q95) on
  a smaller sample, for the figure a pixel-editing dataset gets.

    .venv/bin/python benchmarks/bench_export.py [--records 20000] [--small 5000] [--workers 4]

The last line is ``RESULT export_mb_per_s=<MB/s at N records> target>=50``.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from measure import peak_rss_mib, reset_peak_rss
from PIL import Image, ImageDraw, ImageFilter

from cotforge.data.annotations import load_annotations
from cotforge.rationale import parse
from cotforge.store import Store

SAMPLE = Path(__file__).resolve().parent.parent / "tests" / "data" / "fine_r1_stage1_sample.json"
SIDE = 512
PICTURES = 200
TEACHER = "bench:teacher"


# --- the inputs -------------------------------------------------------------------------------


def _picture(rng: np.random.Generator) -> bytes:
    """One 512x512 photo-like JPEG: a smooth random colour field, shapes with edges, noise."""
    coarse = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    field = Image.fromarray(coarse).resize((SIDE, SIDE), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(field)
    for _ in range(int(rng.integers(6, 14))):
        x, y = (int(v) for v in rng.integers(0, SIDE, 2))
        w, h = (int(v) for v in rng.integers(20, 200, 2))
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse((x, y, x + w, y + h), fill=colour)
        else:
            draw.polygon([(x, y), (x + w, y + h // 3), (x + w // 2, y + h)], fill=colour)
    field = field.filter(ImageFilter.GaussianBlur(1.2))
    pixels = np.asarray(field, dtype=np.int16) + rng.normal(0, 9, (SIDE, SIDE, 3)).astype(np.int16)
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _with_comment(jpeg: bytes, number: int) -> bytes:
    """``jpeg`` with a COM segment after its SOI marker: a valid, different file."""
    text = f"cotforge bench image {number}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[2:]


def _texts() -> list[tuple[str, str]]:
    """(analysis, comparison) of the 12 real records, for tagged teacher answers."""
    records = json.loads(SAMPLE.read_text(encoding="utf-8"))
    parsed = [parse(record["messages"][2]["content"]) for record in records]
    return [(r.analysis or "", r.comparison or "") for r in parsed]


def _answer(name: str, texts: tuple[str, str]) -> str:
    analysis, comparison = texts
    return (
        f"<analysis>\n{analysis}\n</analysis>\n<options>\n{name}\nOther Kind X\n</options>\n"
        f"<comparison>\n{comparison}\n</comparison>\n"
        f"<prediction>\nThe features in the image match best: {name}\n</prediction>"
    )


def write_images(root: Path, dataset: str, records: int, seed: int = 0) -> list[tuple[str, int]]:
    """``records`` JPEG files under ``root`` in the dataset's layout; returns (key, class)."""
    rng = np.random.default_rng(seed)
    pictures = [_picture(rng) for _ in range(PICTURES)]
    classes = load_annotations(dataset).classes
    made = []
    for number in range(records):
        info = classes[number % len(classes)]
        if dataset == "cub":
            key = f"images/{info.label}/bench_{number:06d}.jpg"
        else:  # aircraft: one flat folder
            key = f"data/images/{number:07d}.jpg"
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_with_comment(pictures[number % PICTURES], number))
        made.append((key, info.index))
    return made


def build_store(path: Path, root: Path, dataset: str, images: list[tuple[str, int]]) -> None:
    """A store whose every record passes curation, written through the Store writers."""
    notes = load_annotations(dataset)
    texts = _texts()
    rng = random.Random(0)
    with Store.open(path) as db:
        plan = db.start_run("plan", {"dataset": dataset, "root": str(root)}, {})
        db.finish_run(plan, "ok")
        run = db.start_run("generate", {"dataset": dataset}, {})
        for start in range(0, len(images), 2000):
            chunk = images[start : start + 2000]
            image_rows, samples, requests, rationales, verdicts = [], [], [], [], []
            for key, index in chunk:
                info = notes.classes[index]
                image_id = f"{dataset}/train/{key}"
                common = {"dataset": dataset, "class_index": index, "label": info.label}
                image_rows.append(
                    {"image_id": image_id, "split": "train", "key": key, "class_name": info.name}
                    | common
                )
                samples.append(
                    {"sample_id": image_id, "run_id": plan, "class_name": info.name}
                    | {"class_split": "seen", "shot": 0, "seed": 0}
                    | common
                )
                rid = f"{rng.getrandbits(128):032x}"
                requests.append(
                    {
                        "request_id": rid,
                        "run_id": run,
                        "sample_id": image_id,
                        "purpose": "rationale",
                        "model": TEACHER,
                        "prompt_hash": "0123456789abcdef",
                        "status": "ok",
                        "response_text": _answer(info.name, texts[index % len(texts)]),
                    }
                )
                rationales.append({"rationale_id": rid, "request_id": rid, "sample_id": image_id})
                verdicts.append(
                    {"rationale_id": rid, "check_name": "structure", "passed": True}
                    | {"required": True, "run_id": run}
                )
            with db.transaction():
                db.add_images(image_rows)
                db.add_samples(samples)
                db.add_request_results(requests, rationales)
                db.upsert_verdicts(verdicts)
        db.finish_run(run, "ok")


# --- phases (each in its own process) ---------------------------------------------------------


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def export_phase(store: str, out: str, workers: str) -> dict:
    from cotforge.config import ExportOptions
    from cotforge.export import run_export

    options = ExportOptions(out=Path(out), configs=["sft"], workers=int(workers))
    with Store.open(Path(store)) as db:
        import datasets  # noqa: F401  (imported before the window, as run_export would)

        reset_peak_rss()
        before = _rss_mib()
        started = time.perf_counter()
        summary = run_export(db, options)
        seconds = time.perf_counter() - started
    rows = sum(config.rows for config in summary.configs)
    return {
        "rows": rows,
        "bytes": _folder_bytes(Path(out)),
        "seconds": seconds,
        "rss_before_mib": before,
        "peak_mib": peak_rss_mib(),
    }


def baseline_phase(store: str, root: str, out: str) -> dict:
    """The same image bytes and texts through a default ParquetWriter, 100 rows a batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with Store.open(Path(store), read_only=True) as db:
        frames = list(db.export_rationales(review="ignore"))
    records = [(r["key"], r["text"]) for f in frames for r in f.iter_rows(named=True)]
    schema = pa.schema(
        [
            ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
            ("text", pa.string()),
        ]
    )
    reset_peak_rss()
    started = time.perf_counter()
    with pq.ParquetWriter(out, schema) as writer:
        for start in range(0, len(records), 100):
            batch = [
                {"image": {"bytes": (Path(root) / key).read_bytes(), "path": key}, "text": text}
                for key, text in records[start : start + 100]
            ]
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
    seconds = time.perf_counter() - started
    return {
        "rows": len(records),
        "bytes": Path(out).stat().st_size,
        "seconds": seconds,
        "peak_mib": peak_rss_mib(),
    }


PHASES = {"export": export_phase, "baseline": baseline_phase}


def _run(phase: str, *args: object) -> dict:
    command = [sys.executable, __file__, "--phase", phase, *map(str, args)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--small", type=int, default=5_000)
    parser.add_argument("--aircraft", type=int, default=2_000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(PHASES[args.phase[0]](*args.phase[1:])))
        return

    work = Path(tempfile.mkdtemp(prefix="cotforge-bench-export-"))
    try:
        started = time.perf_counter()
        cub = work / "CUB_200_2011"
        images = write_images(cub, "cub", args.records)
        build_store(work / "small.duckdb", cub, "cub", images[: args.small])
        build_store(work / "large.duckdb", cub, "cub", images)
        planes = work / "fgvc-aircraft-2013b"
        planes_images = write_images(planes, "aircraft", args.aircraft, seed=1)
        build_store(work / "aircraft.duckdb", planes, "aircraft", planes_images)
        print(f"inputs: {args.records:,} JPEGs + stores in {time.perf_counter() - started:.0f} s")

        phases = [
            (f"export sft {args.small:,}", "export", "small.duckdb", "o1", args.workers),
            (f"export sft {args.records:,}", "export", "large.duckdb", "o2", args.workers),
            (f"plain pyarrow {args.records:,}", "baseline", "large.duckdb", cub, "b.parquet"),
            (
                f"aircraft re-encode {args.aircraft:,}",
                "export",
                "aircraft.duckdb",
                "o3",
                args.workers,
            ),
        ]
        results = [
            (
                name,
                _run(phase, work / store, *(work / a if isinstance(a, str) else a for a in rest)),
            )
            for name, phase, store, *rest in phases
        ]
        header = ("phase", "rows", "MB written", "seconds", "MB/s", "peak RSS MiB", "RSS before")
        table = [
            (
                name,
                f"{r['rows']:,}",
                f"{r['bytes'] / 1e6:,.0f}",
                f"{r['seconds']:.1f}",
                f"{r['bytes'] / 1e6 / r['seconds']:.0f}",
                f"{r['peak_mib']:.0f}",
                f"{r['rss_before_mib']:.0f}" if "rss_before_mib" in r else "-",
            )
            for name, r in results
        ]
        widths = [max(len(row[i]) for row in (header, *table)) for i in range(len(header))]
        for row in (header, *table):
            print(
                "  ".join(
                    c.ljust(w) if i == 0 else c.rjust(w)
                    for i, (c, w) in enumerate(zip(row, widths, strict=True))
                )
            )
        small, large = results[0][1], results[1][1]
        print(
            f"peak RSS at {args.small:,} vs {args.records:,} records: "
            f"{small['peak_mib']:.0f} vs {large['peak_mib']:.0f} MiB"
        )
        rate = large["bytes"] / 1e6 / large["seconds"]
        print(f"RESULT export_mb_per_s={rate:.0f} target>=50")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
