"""The notify benchmark runs end to end in ``--quick`` mode and ends with its one-line summary (no timing)."""

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
SCRIPT = ROOT / "bench" / "notify.py"
FINAL = re.compile(r"^notify_p99_ms=(\S+) mqtt_ingest_ratio=(\S+) temporal_p95_ms=(\S+)$")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_notify_benchmark_on_sqlite(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCIETY5_")}
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True,
                         timeout=280, cwd=tmp_path, env=env, check=False)
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    last = [ln for ln in out.stdout.splitlines() if ln.strip()][-1]
    match = FINAL.match(last)
    assert match, f"last line is not the summary: {last!r}"
    notify_p99, mqtt_ratio, temporal_p95 = (float(v) for v in match.groups())
    assert notify_p99 >= 0 and mqtt_ratio > 0 and temporal_p95 > 0
    assert "0 updates never notified" in out.stdout  # every acknowledged update reached the webhook
    assert "buckets per answer [720]" in out.stdout  # 30 days of hourly averages came back


def test_cli_runs_the_notify_benchmark(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    monkeypatch.setattr("society5.cli.bench.subprocess.call", lambda cmd: calls.append(cmd) or 0)
    result = CliRunner().invoke(bench_cli.bench_app, ["notify", "--quick", "--skip-mqtt"])
    assert result.exit_code == 0
    assert calls == [[sys.executable, str(SCRIPT.resolve()), "--quick", "--skip-mqtt"]]
