"""``society5 import csv``: load a sensor CSV file into the broker's temporal history, with a progress bar."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from society5.core.settings import Settings

import_app = typer.Typer(help="load files into the platform / ファイルの取り込み", no_args_is_help=True)
console = Console(stderr=True)


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise typer.BadParameter(f"{what} must look like column=value, not {item!r}")
        out[key] = value
    return out


@import_app.command("csv")
def import_csv(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="CSV (UTF-8, UTF-8 BOM, Shift_JIS)"),
    entity_type: str = typer.Option(..., "--type", help="entity type, e.g. PowerMeter"),
    time_column: str = typer.Option(..., "--time-column", help="column with the observation time"),
    id_column: str = typer.Option(None, "--id-column", help="column with each row's entity id"),
    entity_id: str = typer.Option(None, "--entity-id", help="one entity id for the whole file"),
    id_prefix: str = typer.Option("", "--id-prefix", help="prepended to the id column (urn:ngsi-ld:Type:)"),
    columns: str = typer.Option("", help="value columns, comma-separated (default: all others)"),
    rename: list[str] = typer.Option([], help="column=attribute (repeatable)"),
    unit: list[str] = typer.Option([], help="attribute=unitCode, e.g. power=KWT (repeatable)"),
    timezone: str = typer.Option("Asia/Tokyo", help="zone of times written without an offset"),
    tenant: str = typer.Option(None, help="tenant (6-digit municipality code); default tenant if omitted"),
) -> None:
    """Load a sensor CSV into history / センサーCSVを履歴に取り込む"""
    from society5.broker.csv_import import CsvImportError, CsvLayout, decode, load, parse
    from society5.broker.service import start
    from society5.core.platform import Platform

    try:
        layout = CsvLayout(
            entity_type=entity_type, time_column=time_column, id_column=id_column, entity_id=entity_id,
            id_prefix=id_prefix, columns=tuple(c.strip() for c in columns.split(",") if c.strip()),
            rename=_pairs(rename, "--rename"), units=_pairs(unit, "--unit"), timezone=timezone,
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    platform = Platform.open(Settings())
    try:
        broker = start(platform)
        temporal = platform.parts["temporal"]
        try:
            observations = parse(decode(path.read_bytes()), layout)
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeRemainingColumn(), console=console) as bar:
                task = bar.add_task(f"{path.name} → {entity_type}", total=len(observations))
                written = load(temporal, tenant, observations, layout, broker.context(None),
                               progress=lambda n: bar.advance(task, n))
        except CsvImportError as err:
            console.print(f"[red]取り込めません / cannot import {path}:[/red]\n{err}")
            raise typer.Exit(2) from None
        entities = len({o.entity_id for o in observations})
        console.print(f"{len(observations)} rows, {entities} entities, {written} attribute instances stored "
                      f"/ {len(observations)} 行を取り込みました")
    finally:
        platform.close()
