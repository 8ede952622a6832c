"""The broker benchmark runs end to end in ``--quick`` mode and ends with its one-line summary.

Speed is not asserted (these machines are shared); the format, positive figures and "no non-2xx answers"
(the benchmark exits 3 when any request failed) are.
"""

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
SCRIPT = ROOT / "bench" / "broker.py"
FINAL = re.compile(r"^ingest_ratio=(\S+) patch_ratio=(\S+) get_ratio=(\S+) query_p95_ms=(\S+)$")
PG_ADMIN_URL = os.environ.get("SOCIETY5_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# quick mode, shortened further: 1 s per concurrent phase and 2,000 Vehicles for the geo-query
QUICK = ["--quick", "--duration", "1", "--query-entities", "2000"]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCIETY5_")}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=240,
                          cwd=cwd, env=env, check=False)


def _check_final_line(out: subprocess.CompletedProcess[str]) -> dict[str, float]:
    assert out.returncode == 0, f"exit {out.returncode}\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    lines = [ln for ln in out.stdout.splitlines() if ln.strip()]
    assert lines, out.stderr[-4000:]
    match = FINAL.match(lines[-1])
    assert match, f"last line is not the summary: {lines[-1]!r}"
    figures = dict(zip(("ingest_ratio", "patch_ratio", "get_ratio", "query_p95_ms"),
                       (float(v) for v in match.groups()), strict=True))
    for name, value in figures.items():
        assert value > 0, f"{name}={value}"
    assert "non-2xx" in out.stdout  # the error counts are part of the printed table
    return figures


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_benchmark_on_sqlite(tmp_path: Path) -> None:
    _check_final_line(_run(QUICK, tmp_path))


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.timeout(300)
def test_quick_benchmark_on_postgresql(tmp_path: Path) -> None:
    psycopg = pytest.importorskip("psycopg")
    admin = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://", 1)

    out = _run([*QUICK, "--database-url", PG_ADMIN_URL], tmp_path)
    _check_final_line(out)
    found = re.search(r"database (s5bench_[0-9a-f]+) \(created for this run", out.stdout)
    assert found, "the table names the run's database"
    with psycopg.connect(admin, autocommit=True) as conn:
        left = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (found.group(1),)).fetchone()
    assert left is None, f"the benchmark's database {found.group(1)} was not dropped"


def test_cli_finds_the_benchmark_in_the_checkout() -> None:
    assert (bench_cli.bench_dir() / "broker.py").resolve() == SCRIPT.resolve()
    result = CliRunner().invoke(bench_cli.bench_app, ["broker", "--help"])
    assert result.exit_code == 0
    assert "--database-url" in result.output and "--quick" in result.output


def test_cli_explains_a_missing_benchmark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_cli, "bench_dir", lambda: tmp_path / "bench")
    result = CliRunner().invoke(bench_cli.bench_app, ["broker", "--quick"])
    assert result.exit_code == 2
    assert "not here" in result.output and "source checkout" in result.output


def test_cli_passes_options_through(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []

    def fake_call(cmd: list[str]) -> int:
        calls.append(cmd)
        return 3

    monkeypatch.setattr("society5.cli.bench.subprocess.call", fake_call)
    result = CliRunner().invoke(bench_cli.bench_app, ["broker", "--quick", "--database-url", "sqlite:///x.db",
                                                      "--duration", "1"])
    assert result.exit_code == 3  # the benchmark's exit status comes back
    assert calls == [[sys.executable, str(SCRIPT.resolve()), "--database-url", "sqlite:///x.db", "--quick",
                      "--duration", "1"]]
