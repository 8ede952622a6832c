#!/usr/bin/env python3
"""Bear-detection benchmark: the ``bears`` vision core on trail-camera-like frames, one CPU thread.

Usage::

    python bench/bears.py [--images DIR] [--quick] [--split test|validation] [--threshold T]

``DIR`` holds ``bear/`` and ``other/`` and optionally ``ref/`` (for a frame of the same file name, an earlier
empty frame of the same camera) and ``labels.csv`` (from ``scripts/build_bear_eval.py``: subject size,
day/night). Without ``--images`` the test split is built into a temporary folder first (Debian's
``tuxpaint-stamps-default`` gives the subjects; drawn shapes without it). Prints a confusion table, recall by
subject size and by day/night, a threshold sweep, and as its LAST line::

    precision=<p> recall=<r> ms_per_image=<t>

for the bear class at the configured threshold on the frames that have a reference (all frames when none
has), ``ms_per_image`` the mean wall time of ``classify`` (reading the JPEGs excluded) per frame.
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # one CPU thread, set before numpy is imported

import argparse  # noqa: E402
import csv  # noqa: E402
import importlib.util  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
try:
    import cv2
    import numpy as np  # noqa: F401
    from rich.console import Console
    from rich.table import Table
except ImportError:  # pragma: no cover - started with a Python that lacks the project's dependencies
    _VENV = ROOT / ".venv"
    if __name__ == "__main__" and (_VENV / "bin" / "python").exists() and Path(sys.prefix).resolve() != _VENV:
        os.execv(str(_VENV / "bin" / "python"), [str(_VENV / "bin" / "python"), *sys.argv])
    raise

cv2.setNumThreads(1)


def _builder() -> Any:
    script = ROOT / "scripts" / "build_bear_eval.py"
    spec = importlib.util.spec_from_file_location("s5_build_bear_eval", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _labels(images: Path) -> dict[str, dict[str, str]]:
    path = images / "labels.csv"
    if not path.is_file():
        return {}
    with path.open(encoding="utf-8") as fh:
        return {row["file"]: row for row in csv.DictReader(fh)}


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def run(images: Path, threshold: float | None, console: Console, limit: int | None = None) -> str:
    from society5.services.bears.vision.classifier import (
        ClassifierConfig,
        EfficientNetClassifier,
        Thresholds,
        read_rgb,
    )

    if threshold is None:  # the service's setting (SOCIETY5_BEARS_SIGHTING_THRESHOLD), else the tuned default
        from society5.core.settings import Settings

        threshold = Settings().bears_sighting_threshold
    config = ClassifierConfig()
    if threshold is not None:
        config = ClassifierConfig(thresholds=Thresholds(bear=threshold))
    classifier = EfficientNetClassifier(config)
    labels = _labels(images)
    files = [(truth, p) for truth in ("bear", "other") for p in sorted((images / truth).glob("*"))
             if p.suffix.lower() in {".jpg", ".jpeg", ".png"}]
    if limit:
        files = files[:limit]
    if not files:
        raise SystemExit(f"no images under {images}/bear or {images}/other")
    records = []
    warm = read_rgb(files[0][1])
    classifier.classify(warm)  # load caches outside the timing
    for i, (truth, path) in enumerate(files):
        image = read_rgb(path)
        ref_path = images / "ref" / path.name
        ref = read_rgb(ref_path) if ref_path.is_file() else None
        result = classifier.classify(image, ref)
        meta = labels.get(f"{truth}/{path.name}", {})
        records.append({"truth": truth, "pred": result.label, "bear_score": result.bear_score,
                        "ms": result.ms, "ref": ref is not None, "kind": meta.get("kind", truth),
                        "size": meta.get("size", "?"), "night": meta.get("night", "?"),
                        "occluded": meta.get("occluded", "?")})
        if (i + 1) % 50 == 0:
            print(f"  {i + 1}/{len(files)} frames", file=sys.stderr, flush=True)

    with_ref = [r for r in records if r["ref"]]
    scored = with_ref or records
    th = config.thresholds.bear

    confusion = Table(title=f"confusion ({len(records)} frames; rows: truth kind, columns: predicted label)")
    preds = ["bear", "other_animal", "person", "vehicle", "empty"]
    confusion.add_column("truth")
    for p in preds:
        confusion.add_column(p, justify="right")
    by_kind: dict[str, Counter[str]] = defaultdict(Counter)
    for r in records:
        by_kind[r["kind"]][r["pred"]] += 1
    for kind in sorted(by_kind, key=lambda k: (k != "bear", k)):
        confusion.add_row(kind, *(str(by_kind[kind][p]) for p in preds))
    console.print(confusion)

    bears = [r for r in scored if r["truth"] == "bear"]
    recall_table = Table(title="bear recall by subject size and by day/night (frames with a reference)")
    recall_table.add_column("group")
    recall_table.add_column("bears", justify="right")
    recall_table.add_column("recall", justify="right")
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in bears:
        groups[f"size {r['size']}"].append(r)
        groups["night" if r["night"] == "1" else "day" if r["night"] == "0" else "day/night ?"].append(r)
        if r["occluded"] == "1":
            groups["partly hidden"].append(r)
    for name in sorted(groups):
        hits = sum(r["pred"] == "bear" for r in groups[name])
        recall_table.add_row(name, str(len(groups[name])), f"{_ratio(hits, len(groups[name])):.3f}")
    console.print(recall_table)

    sweep = Table(title="bear threshold sweep (frames with a reference)")
    for col in ("threshold", "precision", "recall"):
        sweep.add_column(col, justify="right")
    for t in (0.03, 0.05, 0.07, 0.1, 0.15, 0.2, 0.3, 0.5):
        tp = sum(r["truth"] == "bear" and r["bear_score"] >= t for r in scored)
        fp = sum(r["truth"] != "bear" and r["bear_score"] >= t for r in scored)
        sweep.add_row(f"{t:.2f}", f"{_ratio(tp, tp + fp):.3f}", f"{_ratio(tp, len(bears)):.3f}")
    console.print(sweep)

    tp = sum(r["truth"] == "bear" and r["pred"] == "bear" for r in scored)
    fp = sum(r["truth"] != "bear" and r["pred"] == "bear" for r in scored)
    no_ref = len(records) - len(with_ref)
    ms_ref = [r["ms"] for r in scored]
    ms_sorted = sorted(ms_ref)
    console.print(f"bear threshold {th}; {len(with_ref)} frames with a reference, {no_ref} without; "
                  f"classify ms mean {sum(ms_ref) / len(ms_ref):.1f}, p95 "
                  f"{ms_sorted[int(0.95 * (len(ms_sorted) - 1))]:.1f} (one thread)")
    if no_ref and with_ref:
        nr = [r for r in records if not r["ref"]]
        ntp = sum(r["truth"] == "bear" and r["pred"] == "bear" for r in nr)
        nfp = sum(r["truth"] != "bear" and r["pred"] == "bear" for r in nr)
        nb = sum(r["truth"] == "bear" for r in nr)
        console.print(f"without a reference: precision {_ratio(ntp, ntp + nfp):.3f} "
                      f"recall {_ratio(ntp, nb):.3f}")
    return (f"precision={_ratio(tp, tp + fp):.3f} recall={_ratio(tp, len(bears)):.3f} "
            f"ms_per_image={sum(ms_ref) / len(ms_ref):.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="bear-detection benchmark (one CPU thread)")
    parser.add_argument("--images", type=Path, help="folder with bear/, other/ and optionally ref/")
    parser.add_argument("--quick", action="store_true", help="a few generated frames: a smoke test")
    parser.add_argument("--split", choices=["test", "validation"], default="test",
                        help="which split to build when --images is not given")
    parser.add_argument("--threshold", type=float, help="bear threshold (default: the configured one)")
    parser.add_argument("--bears", type=int, default=120)
    parser.add_argument("--others", type=int, default=240)
    args = parser.parse_args(argv)
    console = Console(width=110)
    with tempfile.TemporaryDirectory(prefix="s5bears-") as tmp:
        images = args.images
        if images is None:
            builder = _builder()
            bears, others = (4, 6) if args.quick else (args.bears, args.others)
            console.print(f"building the {args.split} split ({bears} bear, {others} other frames) in {tmp}")
            cameras = 4 if args.quick else 12
            images = builder.build_split(Path(tmp), args.split, bears, others, cameras=cameras)
        last = run(images, args.threshold, console, limit=10 if args.quick and args.images else None)
    print(last, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
