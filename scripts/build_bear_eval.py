#!/usr/bin/env python3
"""Build the bear evaluation set: trail-camera-like frames made by script (the images are never committed).

Usage::

    python scripts/build_bear_eval.py OUT [--split validation|test|both] [--bears N] [--others N]

writes ``OUT/<split>/bear/*.jpg``, ``OUT/<split>/other/*.jpg``, ``OUT/<split>/ref/*.jpg`` (for each frame an
earlier empty frame of the same camera, same file name) and ``OUT/<split>/labels.csv`` (kind, stamp, subject
size, day/night, partly hidden, box, camera) — the layout ``society5 bench bears --images OUT/<split>`` reads.

Subjects are the photographic cut-outs of Debian's ``tuxpaint-stamps-default`` (``apt-get install
tuxpaint-stamps-default``): two bears; deer, foxes, dogs, a wild boar, badger, hares, squirrels, livestock and
birds; firemen and soldiers; cars, trucks and a tractor. They are pasted onto procedurally generated outdoor
scenes (forest, field, snow; distant tree line, trunks, bushes in front), small and distant or close, partly
hidden behind foreground bushes, with a soft shadow, then given trail-camera effects: night infrared
(greyscale, flash vignette, heavy noise), motion blur on the subject, sensor noise, exposure drift between
the reference and the frame, a timestamp strip at the bottom and JPEG compression. Empty frames (nothing
added, only noise and exposure) are part of ``other``.

Validation and test come from disjoint seeds: different cameras (scenes), placements and effects. With only
two bear photographs in the package both splits necessarily reuse them (in other poses: flipped, scaled,
recoloured, hidden, at night): thresholds are tuned on validation, figures reported on test, nothing is
trained. Without the package (``--synthetic``, or automatically when it is missing) subjects are drawn
shapes, good for a smoke test only. The scenes and the compositing are ``society5.services.bears.scenes``
(the demo's simulated cameras use them too).
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image

from society5.services.bears.scenes import (
    ANIMALS,
    BEARS,
    HEIGHT,
    PEOPLE,
    STAMPS,
    VEHICLES,
    WIDTH,
    make_camera,
    paste,
    synthetic_subject,
)
from society5.services.bears.scenes import finish as _finish
from society5.services.bears.scenes import load_stamp as _stamp

SPLIT_SEEDS = {"validation": 1_000_003, "test": 2_000_003}
# Share of each kind among the ``other`` frames
OTHER_MIX = (("animal", 0.45), ("person", 0.15), ("vehicle", 0.10), ("empty", 0.30))
SIZES = {"small": (0.06, 0.12), "medium": (0.12, 0.25), "large": (0.25, 0.5)}  # subject height / frame


def _save(path: Path, rgb: np.ndarray, rng: random.Random) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, format="JPEG", quality=rng.randint(70, 92))


def build_split(out: Path, split: str, bears: int, others: int, synthetic: bool = False,
                cameras: int = 12) -> Path:
    """Write one split under ``out/split``; returns that folder."""
    synthetic = synthetic or not STAMPS.is_dir()
    base = SPLIT_SEEDS[split]
    rng = random.Random(base)
    cams = [make_camera(base * 100 + i, f"{split[:3]}cam{i:02d}") for i in range(cameras)]
    root = out / split
    rows: list[dict[str, object]] = []
    jobs = [("bear", "bear")] * bears
    for kind, share in OTHER_MIX:
        jobs += [("other", kind)] * round(others * share)
    rng.shuffle(jobs)
    for idx, (truth, kind) in enumerate(jobs):
        cam = cams[idx % len(cams)]
        when = datetime(2025, 5, 1) + timedelta(days=rng.randint(0, 150), seconds=rng.randint(0, 86399))
        frame = cam.background.copy()
        size, occluded, stamp, box = "none", False, "", (0, 0, 0, 0)
        if kind != "empty":
            if kind == "bear":
                stamp = rng.choice(BEARS)
                detail = "bear"
            elif kind == "animal":
                detail = rng.choice(sorted(ANIMALS))
                stamp = rng.choice(ANIMALS[detail])
            elif kind == "person":
                stamp, detail = rng.choice(PEOPLE), "person"
            else:
                stamp, detail = rng.choice(VEHICLES), "vehicle"
            subject = synthetic_subject(kind, rng) if synthetic else _stamp(stamp, rng)
            size = rng.choice(sorted(SIZES))
            lo, hi = SIZES[size]
            height = int(HEIGHT * rng.uniform(lo, hi))
            if detail in {"hare", "rodent", "bird"}:
                height = max(12, height // 2)
            y_feet = rng.randint(max(cam.horizon + height // 3, int(HEIGHT * 0.5)), int(HEIGHT * 0.93))
            x = rng.randint(int(WIDTH * 0.08), int(WIDTH * 0.92))
            box = paste(frame, subject, x, y_feet, height, rng, cam.night)
            if box[2] > box[0]:
                occluded = bool((cam.foreground[box[1]:box[3], box[0]:box[2], 3] > 0.5).mean() > 0.1)
            kind_label = detail
        else:
            kind_label = "empty"
        name = f"{split[:3]}_{idx:04d}.jpg"
        exposure_ref = rng.uniform(0.92, 1.08)
        _save(root / truth / name, _finish(frame, cam, rng, when, rng.uniform(0.92, 1.08)), rng)
        earlier = when - timedelta(minutes=rng.randint(5, 240))
        _save(root / "ref" / name, _finish(cam.background.copy(), cam, rng, earlier, exposure_ref), rng)
        rows.append({"file": f"{truth}/{name}", "truth": truth, "kind": kind_label,
                     "stamp": "synthetic" if synthetic and stamp else stamp, "size": size,
                     "night": int(cam.night), "occluded": int(occluded), "camera": cam.name,
                     "scene": cam.kind, "box": " ".join(str(v) for v in box)})
    with (root / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]) if rows else ["file"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--split", choices=["validation", "test", "both"], default="both")
    parser.add_argument("--bears", type=int, default=120)
    parser.add_argument("--others", type=int, default=240)
    parser.add_argument("--cameras", type=int, default=12)
    parser.add_argument("--synthetic", action="store_true", help="drawn subjects (no tuxpaint stamps)")
    args = parser.parse_args(argv)
    if not STAMPS.is_dir() and not args.synthetic:
        print(f"{STAMPS} is missing (apt-get install tuxpaint-stamps-default): drawn subjects instead, "
              "good for a smoke test only", file=sys.stderr)
    for split in (["validation", "test"] if args.split == "both" else [args.split]):
        root = build_split(args.out, split, args.bears, args.others, args.synthetic, args.cameras)
        print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
