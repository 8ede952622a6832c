"""``society5 bench``: the benchmarks kept in the source checkout's ``bench/`` folder (not in the wheel)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

import society5

bench_app = typer.Typer(help="benchmarks, from a source checkout / ベンチマーク", no_args_is_help=True)


@bench_app.callback()
def _group() -> None:
    """Benchmarks, from a source checkout / ベンチマーク"""
    # A callback keeps ``bench`` a group even with one command, so ``bench broker`` means the same whether
    # bench_app runs on its own or is mounted with ``app.add_typer(bench_app, name="bench")``.


def bench_dir() -> Path:
    """``bench/`` next to ``src/`` of the checkout this package was installed from (``pip install -e .``)."""
    return Path(society5.__file__).resolve().parents[2] / "bench"


def _run_script(name: str, args: list[str]) -> None:
    script = bench_dir() / name
    if not script.is_file():
        typer.echo(f"the benchmark is not here: {script} does not exist. It lives in the source checkout "
                   f"(bench/{name}), not in an installed wheel: run it from a git checkout installed with "
                   f"`pip install -e .`, or `python bench/{name}` there.", err=True)
        raise typer.Exit(2)
    raise typer.Exit(subprocess.call([sys.executable, str(script), *args]))


DATABASE_HELP = ("sqlite:///NEW_FILE or postgresql+psycopg://user@host:5432/db (a fresh s5bench_* database "
                 "is created there and dropped afterwards); default: a temporary SQLite file")
PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}


def _common(database_url: str | None, quick: bool) -> list[str]:
    return [*(["--database-url", database_url] if database_url else []), *(["--quick"] if quick else [])]


@bench_app.command("broker", context_settings=PASS_THROUGH)
def broker(
    ctx: typer.Context,
    database_url: str = typer.Option(None, "--database-url", help=DATABASE_HELP),
    quick: bool = typer.Option(False, "--quick", help="tiny sizes: a smoke test, not a measurement"),
) -> None:
    """Benchmark the broker over HTTP against raw baselines; the last line holds the four figures.

    Other options of bench/broker.py (--duration, --profile DIR, ...) are passed through.
    """
    _run_script("broker.py", [*_common(database_url, quick), *ctx.args])


@bench_app.command("notify", context_settings=PASS_THROUGH)
def notify(
    ctx: typer.Context,
    database_url: str = typer.Option(None, "--database-url", help=DATABASE_HELP),
    quick: bool = typer.Option(False, "--quick", help="tiny sizes: a smoke test, not a measurement"),
) -> None:
    """Benchmark notification latency, MQTT ingest and history aggregation; the last line holds the figures.

    Other options of bench/notify.py (--skip-mqtt) are passed through.
    """
    _run_script("notify.py", [*_common(database_url, quick), *ctx.args])


@bench_app.command("opendata", context_settings=PASS_THROUGH)
def opendata(
    ctx: typer.Context,
    database_url: str = typer.Option(None, "--database-url", help=DATABASE_HELP),
    quick: bool = typer.Option(False, "--quick", help="tiny sizes: a smoke test, not a measurement"),
) -> None:
    """Benchmark datastore_search on 1,000,000 rows, package_search over 10,000 datasets and CSV ingest;
    the last line holds the figures. / オープンデータのベンチマーク
    """
    _run_script("opendata.py", [*_common(database_url, quick), *ctx.args])


@bench_app.command("bears", context_settings=PASS_THROUGH)
def bears(
    ctx: typer.Context,
    images: str = typer.Option(None, "--images", help="folder with bear/, other/ and optionally ref/ "
                               "(default: the test split built by scripts/build_bear_eval.py)"),
    quick: bool = typer.Option(False, "--quick", help="a few generated frames: a smoke test only"),
) -> None:
    """Benchmark bear detection (confusion table, recall by size and day/night) on one CPU thread; the last
    line holds precision, recall and ms per image. / ヒグマ検出のベンチマーク

    Other options of bench/bears.py (--threshold, --split) are passed through.
    """
    _run_script("bears.py", [*(["--images", images] if images else []), *(["--quick"] if quick else []),
                             *ctx.args])


@bench_app.command("bears-alerts", context_settings=PASS_THROUGH)
def bears_alerts(
    ctx: typer.Context,
    database_url: str = typer.Option(None, "--database-url", help=DATABASE_HELP),
    quick: bool = typer.Option(False, "--quick", help="200 subscribers: a smoke test, not a measurement"),
) -> None:
    """Benchmark alert fan-out: a verified sighting inside 10,000 subscribers' areas, to a local webhook and
    SMTP sink; the last line holds the p99 and the count delivered. / 警報配信のベンチマーク

    Other options of bench/bears_alerts.py (--subscribers, --channel, --timeout) are passed through.
    """
    _run_script("bears_alerts.py", [*_common(database_url, quick), *ctx.args])
