"""The open-data benchmark runs end to end in ``--quick`` mode and ends with its summary line (no timing)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from society5.cli import bench as bench_cli

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "opendata.py"
FINAL = re.compile(r"^datastore_p95_ms=(\d+\.\d+) search_p95_ms=(\d+\.\d+) ingest_rows_per_s=(\d+)$")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_opendata_benchmark_on_sqlite(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCIETY5_")}
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True,
                         timeout=280, cwd=tmp_path, env=env, check=False)
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    last = [ln for ln in out.stdout.splitlines() if ln.strip()][-1]
    match = FINAL.match(last)
    assert match, f"last line is not the summary: {last!r}"
    assert all(float(v) > 0 for v in match.groups())
    assert "total per answer [1344]" in out.stdout  # every query matched 7 days × 96 bins × 2 directions
    assert "200 datasets in" in out.stdout  # every package_create succeeded


def test_cli_runs_the_opendata_benchmark(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr("society5.cli.bench.subprocess.call", lambda cmd: calls.append(cmd) or 0)
    result = CliRunner().invoke(bench_cli.bench_app, ["opendata", "--quick", "--database-url", "sqlite:///x.db"])
    assert result.exit_code == 0, result.output
    assert calls == [[sys.executable, str(SCRIPT.resolve()), "--database-url", "sqlite:///x.db", "--quick"]]
