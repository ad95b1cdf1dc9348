"""A small FGVC-Aircraft dataset in the official 2013b layout, with generated images.

A newcomer (and the end-to-end tests) can run ``cotforge datasets synth --out DIR``, then plan
and generate against it exactly as against the real 2.6 GB archive: same files, same line
formats, same 20-pixel bottom banner, real class names. The images are drawn, not downloaded:
a sky gradient, a top-down aircraft silhouette whose proportions, sweep, engine count and
livery depend on the class, random placement, and sensor noise. They are not flat colours, so
JPEG sizes, image-processor resizing and teacher payloads behave like real photos.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from cotforge.data.annotations import ClassInfo, load_annotations
from cotforge.errors import ConfigError

ROOT_NAME = "fgvc-aircraft-2013b"
"""The folder the official archive extracts to; the dataset root the aircraft source reads."""
WIDTH, HEIGHT = 384, 256
"""Picture size above the banner: a few hundred pixels, like a downscaled photo."""
BANNER_ROWS = 20
"""The official images' copyright strip, which the aircraft source crops."""

_SPLITS = ("train", "val", "test")
_LEVELS = ("variant", "family", "manufacturer")


@dataclass(frozen=True)
class _Style:
    """How one class looks from above; every image of the class shares it."""

    length: float
    """Fuselage length as a fraction of the image width."""
    span: float
    """Wing span relative to the fuselage length."""
    sweep: float
    """How far back the wing tips sit, relative to the fuselage length."""
    wing_at: float
    """Where the wing root sits along the fuselage (0 nose, 1 tail)."""
    engines: int
    body: tuple[int, int, int]
    accent: tuple[int, int, int]


def write_synthetic_aircraft(
    out: Path, *, classes: int = 10, images_per_class: int = 6, seed: int = 0
) -> Path:
    """Write ``out/fgvc-aircraft-2013b`` and return that folder, the root to pass as ``--root``.

    The first ``classes`` variants of the official order get ``images_per_class`` images each,
    split per class into train / val / test like the official lists (about two thirds train,
    at least one image in each of val and test, so every class appears in every split). The
    same arguments always write the same files.

    Raises :class:`ConfigError` for counts out of range and when the target folder already
    holds something, so a real download is never overwritten.
    """
    notes = load_annotations("aircraft")
    if not 1 <= classes <= len(notes.classes):
        msg = f"classes must be between 1 and {len(notes.classes)}; got {classes}"
        raise ConfigError(msg)
    if images_per_class < len(_SPLITS):
        msg = (
            f"images_per_class must be at least {len(_SPLITS)} (one per official split: "
            f"{', '.join(_SPLITS)}); got {images_per_class}"
        )
        raise ConfigError(msg)
    root = Path(out) / ROOT_NAME
    if root.exists() and any(root.iterdir()):
        msg = f"{root} already exists and is not empty; pass another --out or remove it"
        raise ConfigError(msg)

    rng = random.Random(seed)
    picked = notes.classes[:classes]
    ids = (f"{n:07d}" for n in rng.sample(range(10**7), classes * images_per_class))
    rows: dict[str, list[tuple[str, ClassInfo]]] = {split: [] for split in _SPLITS}
    boxes: dict[str, tuple[int, int, int, int]] = {}
    images = root / "data" / "images"
    images.mkdir(parents=True)
    for info in picked:
        style = _class_style(info, seed)
        counts = _split_counts(images_per_class)
        for split in _SPLITS:
            for _ in range(counts[split]):
                image_id = next(ids)
                image, box = _draw(style, rng)
                image.save(images / f"{image_id}.jpg", format="JPEG", quality=90)
                rows[split].append((image_id, info))
                boxes[image_id] = box
    rows["trainval"] = rows["train"] + rows["val"]
    _write_lists(root / "data", picked, rows, boxes)
    return root


def _split_counts(n: int) -> dict[str, int]:
    """Official proportions (the 2013b lists split each variant's 100 images 34/33/33) with the
    remainder in train, where k-shot sampling draws from."""
    held_out = max(1, n // 6)
    return {"train": n - 2 * held_out, "val": held_out, "test": held_out}


def _write_lists(
    data: Path,
    picked: list[ClassInfo],
    rows: dict[str, list[tuple[str, ClassInfo]]],
    boxes: dict[str, tuple[int, int, int, int]],
) -> None:
    """The official text lists: one ``<id> <name>`` line per image, sorted by image id as the
    archive's lists are, plus the variant/family/manufacturer name lists and ``images_box.txt``."""
    for split, split_rows in rows.items():
        ordered = sorted(split_rows, key=lambda row: row[0])
        for level in _LEVELS:
            lines = [f"{image_id} {_level_name(info, level)}" for image_id, info in ordered]
            _write_text(data / f"images_{level}_{split}.txt", lines)
    for level, file_name in zip(_LEVELS, ("variants", "families", "manufacturers"), strict=True):
        names = dict.fromkeys(_level_name(info, level) for info in picked)
        _write_text(data / f"{file_name}.txt", list(names))
    _write_text(
        data / "images_box.txt",
        [f"{image_id} {x0} {y0} {x1} {y1}" for image_id, (x0, y0, x1, y1) in sorted(boxes.items())],
    )


def _level_name(info: ClassInfo, level: str) -> str:
    if level == "variant":
        return info.label
    return info.hierarchy[0] if level == "manufacturer" else info.hierarchy[1]


def _write_text(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def _class_style(info: ClassInfo, seed: int) -> _Style:
    """Draw the class's look from a generator keyed by (seed, label), so a class looks the same
    whichever other classes are written alongside it."""
    rng = random.Random(f"{seed}:{info.label}")
    return _Style(
        length=rng.uniform(0.55, 0.8),
        span=rng.uniform(0.6, 1.1),
        sweep=rng.uniform(0.0, 0.3),
        wing_at=rng.uniform(0.35, 0.55),
        engines=rng.choice((0, 2, 2, 4)),
        body=tuple(rng.randrange(150, 256) for _ in range(3)),  # type: ignore[arg-type]
        accent=tuple(rng.randrange(0, 160) for _ in range(3)),  # type: ignore[arg-type]
    )


def _draw(style: _Style, rng: random.Random) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """One photo-like image with its banner, and the aircraft's bounding box (1-based, inclusive,
    as ``images_box.txt`` gives it)."""
    sky = _sky(rng)
    plane = _silhouette(style, rng)
    sky.paste(plane, (0, 0), plane)
    pixels = np.asarray(sky, dtype=np.float32)
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, 6.0, pixels.shape)
    photo = Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))
    framed = Image.new("RGB", (WIDTH, HEIGHT + BANNER_ROWS), (255, 255, 255))
    framed.paste(photo, (0, 0))
    ImageDraw.Draw(framed).text((4, HEIGHT + 4), "Photo (c) synthetic - cotforge", fill=(0, 0, 0))
    x0, y0, x1, y1 = plane.getbbox() or (0, 0, WIDTH, HEIGHT)
    return framed, (x0 + 1, y0 + 1, x1, y1)


def _sky(rng: random.Random) -> Image.Image:
    """A vertical gradient from a deeper blue at the top to a paler horizon, varied per image."""
    top = np.array([rng.randrange(40, 110), rng.randrange(90, 160), rng.randrange(170, 240)])
    horizon = np.array([rng.randrange(170, 230), rng.randrange(190, 235), rng.randrange(215, 255)])
    ramp = np.linspace(0.0, 1.0, HEIGHT)[:, None, None]
    rows = top * (1 - ramp) + horizon * ramp
    return Image.fromarray(np.broadcast_to(rows, (HEIGHT, WIDTH, 3)).astype(np.uint8))


def _silhouette(style: _Style, rng: random.Random) -> Image.Image:
    """The aircraft seen from above on a transparent layer, scaled, rotated and placed at random
    so two images of a class differ as two photos of one type do."""
    layer = Image.new("RGBA", (WIDTH, HEIGHT), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    scale = rng.uniform(0.75, 1.0)
    length = style.length * WIDTH * scale
    half_span = min(style.span * length, HEIGHT * 0.9) / 2
    width = length * 0.09
    cx, cy = WIDTH / 2, HEIGHT / 2
    nose, tail = cx + length / 2, cx - length / 2
    body, accent = (*style.body, 255), (*style.accent, 255)

    root_x = nose - style.wing_at * length
    chord = length * 0.18
    tip_x = root_x - style.sweep * length
    for side in (-1, 1):
        draw.polygon(
            [
                (root_x, cy),
                (tip_x, cy + side * half_span),
                (tip_x - chord * 0.4, cy + side * half_span),
                (root_x - chord, cy),
            ],
            fill=body,
        )
        for k in range(style.engines // 2):
            t = (k + 1) / (style.engines // 2 + 1) * 0.7
            ex = root_x + (tip_x - root_x) * t + chord * 0.2
            ey = cy + side * half_span * t
            draw.ellipse((ex - width * 0.9, ey - width * 0.35, ex, ey + width * 0.35), fill=accent)
        draw.polygon(
            [
                (tail + length * 0.12, cy),
                (tail + length * 0.02, cy + side * half_span * 0.35),
                (tail - length * 0.02, cy + side * half_span * 0.35),
                (tail + length * 0.03, cy),
            ],
            fill=accent,
        )
    draw.ellipse((tail, cy - width / 2, nose, cy + width / 2), fill=body)
    draw.line((tail + length * 0.1, cy, nose - length * 0.08, cy), fill=accent, width=2)

    angle = rng.uniform(-35.0, 35.0) + (180.0 if rng.random() < 0.5 else 0.0)
    rotated = layer.rotate(angle, resample=Image.Resampling.BICUBIC)
    bbox = rotated.getbbox() or (0, 0, WIDTH, HEIGHT)
    # Shift the aircraft anywhere it still fits whole in the frame.
    dx = rng.uniform(-bbox[0], WIDTH - bbox[2])
    dy = rng.uniform(-bbox[1], HEIGHT - bbox[3])
    placed = Image.new("RGBA", (WIDTH, HEIGHT), (0, 0, 0, 0))
    placed.paste(rotated, (round(dx), round(dy)))
    return placed
