"""``society5 bears classify DIR`` writes the CSV; ``bench bears --quick`` ends with its summary line."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from society5.cli import bench as bench_cli
from society5.services.bears.cli import app

from .conftest import noisy, paste_subject, scene

ROOT = Path(__file__).resolve().parents[3]
FINAL = re.compile(r"^precision=(\d+\.\d+) recall=(\d+\.\d+) ms_per_image=(\d+\.\d+)$")


def _save(path: Path, rgb, exif_time: str | None = None) -> None:  # type: ignore[no-untyped-def]
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if exif_time:
        exif.get_ifd(0x8769)[0x9003] = exif_time
    Image.fromarray(rgb).save(path, format="JPEG", quality=90, exif=exif)


def test_classify_writes_a_csv(tmp_path: Path) -> None:
    base = scene(21)
    _save(tmp_path / "cam1" / "a.jpg", noisy(paste_subject(base, 300, 200, 60, 50), 1), "2025:06:01 04:30:00")
    _save(tmp_path / "cam1" / "b.jpg", noisy(paste_subject(base, 310, 200, 60, 50), 2), "2025:06:01 04:30:05")
    _save(tmp_path / "cam1" / "c.jpg", noisy(base, 3), "2025:06:01 09:00:00")
    _save(tmp_path / "ref" / "a.jpg", noisy(base, 4))
    _save(tmp_path / "ref" / "b.jpg", noisy(base, 5))
    _save(tmp_path / "ref" / "c.jpg", noisy(base, 6))
    (tmp_path / "cam1" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    result = CliRunner().invoke(app, ["classify", str(tmp_path), "--out", str(tmp_path / "out.csv")])
    assert result.exit_code == 0, result.output
    rows = {r["file"]: r for r in csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text()))}
    assert set(rows) == {"cam1/a.jpg", "cam1/b.jpg", "cam1/c.jpg", "cam1/broken.jpg"}
    assert rows["cam1/c.jpg"]["label"] == "empty" and rows["cam1/c.jpg"]["used_reference"] == "1"
    assert rows["cam1/a.jpg"]["label"] != "empty" and rows["cam1/a.jpg"]["box"]
    assert rows["cam1/a.jpg"]["event"] == rows["cam1/b.jpg"]["event"] != rows["cam1/c.jpg"]["event"]
    assert rows["cam1/a.jpg"]["taken_at"] == "2025-06-01T04:30:00+09:00"
    assert rows["cam1/broken.jpg"]["error"] and not rows["cam1/broken.jpg"]["label"]


@pytest.mark.timeout(120)
def test_quick_bench_prints_the_summary_last(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bears.py"), "--quick"], capture_output=True,
                         text=True, timeout=110, cwd=tmp_path, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    last = [ln for ln in out.stdout.splitlines() if ln.strip()][-1]
    assert FINAL.match(last), last
    assert "confusion" in out.stdout and "recall by subject size" in out.stdout


def test_bench_cli_runs_the_script(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr("society5.cli.bench.subprocess.call", lambda cmd: calls.append(cmd) or 0)
    result = CliRunner().invoke(bench_cli.bench_app, ["bears", "--quick", "--threshold", "0.4"])
    assert result.exit_code == 0
    assert calls == [[sys.executable, str((ROOT / "bench" / "bears.py").resolve()), "--quick",
                      "--threshold", "0.4"]]


def test_bears_group_is_registered() -> None:
    from society5.cli.main import app as main_app

    result = CliRunner().invoke(main_app, ["bears", "--help"])
    assert result.exit_code == 0 and "classify" in result.output
