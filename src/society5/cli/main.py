"""``society5``: serve, demo, db, keys, users, tenants, bench, plus each installed service's group."""

from __future__ import annotations

import logging
import os
import sys

import typer
from rich.console import Console
from rich.table import Table

from society5.core.settings import Settings

app = typer.Typer(
    help="北海道 Society 5.0 platform / 北海道 Society 5.0 データ連携基盤", no_args_is_help=True
)
keys_app = typer.Typer(help="API keys / APIキー", no_args_is_help=True)
users_app = typer.Typer(help="staff accounts for the web pages / 職員アカウント", no_args_is_help=True)
db_app = typer.Typer(help="database schema / データベース", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(users_app, name="users")
app.add_typer(db_app, name="db")


def _add_bench() -> None:
    from society5.cli.bench import bench_app

    app.add_typer(bench_app, name="bench")


_add_bench()


def _add_import() -> None:
    from society5.cli.import_csv import import_app

    app.add_typer(import_app, name="import")


_add_import()


def _add_bears() -> None:
    from society5.services.bears.cli import app as bears_app

    app.add_typer(bears_app, name="bears")


_add_bears()
console = Console(stderr=True)


def _platform() -> object:
    from society5.core.platform import Platform

    return Platform.open(Settings())


@app.command()
def serve(
    host: str = typer.Option(None, help="bind address (default SOCIETY5_HOST or 127.0.0.1)"),
    port: int = typer.Option(None, help="port (default SOCIETY5_PORT or 8000)"),
    workers: int = typer.Option(1, help="worker processes (PostgreSQL for more than one)"),
) -> None:
    """Start the server (NGSI-LD API, pages, services) / サーバーを起動"""
    from society5.core.logs import configure

    settings = Settings()
    configure(settings.log_level)
    bind = host or settings.host
    _run_server(settings, bind, port or settings.port, workers)


def _run_server(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    import uvicorn

    from society5.core.errors import ConfigError
    from society5.web.app import check_auth_off

    try:
        check_auth_off(settings, host)
        settings.effective_secret()
    except ConfigError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from err
    if workers > 1 and settings.is_sqlite:
        console.print("[yellow]several workers share one SQLite file; PostgreSQL is better for that[/yellow]")
    logging.getLogger(__name__).info("society5 listening on http://%s:%d", host, port)
    # The factory reads its settings afresh: tell it where it listens, so links the server writes without a
    # request at hand (alert messages, feeds) point at it when SOCIETY5_BASE_URL is not set.
    os.environ["SOCIETY5_HOST"], os.environ["SOCIETY5_PORT"] = host, str(port)
    uvicorn.run(
        "society5.web.asgi:build",
        host=host,
        port=port,
        workers=workers,
        log_level="warning",
        access_log=False,
        factory=True,
    )


@app.command()
def demo(
    port: int = typer.Option(8000, help="port"),
    host: str = typer.Option("127.0.0.1", help="bind address"),
    fresh: bool = typer.Option(False, help="start from an empty demo database"),
) -> None:
    """Start the demo: server + simulated Hokkaido data on embedded SQLite / デモを起動"""
    from society5.core.logs import configure

    os.environ.setdefault("SOCIETY5_DATABASE_URL", "sqlite:///./var/demo.db")
    os.environ["SOCIETY5_DEMO"] = "true"
    settings = Settings()
    configure(settings.log_level)
    if fresh and settings.is_sqlite:
        path = settings.database_url.removeprefix("sqlite:///")
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(path + suffix):
                os.remove(path + suffix)
    from society5.demo import load_demo

    info = load_demo(settings, progress=True)
    url = f"http://{host}:{port}/"
    console.print(f"[bold green]society5 demo[/bold green]: {url}")
    console.print(
        f"  staff login / 職員ログイン: [bold]{info['user']}[/bold] / [bold]{info['password']}[/bold]"
    )
    console.print(f"  admin API key / 管理者APIキー: {info['key']}")
    print(url, flush=True)
    _run_server(settings, host, port)


@app.command("mqtt")
def mqtt_bridge() -> None:
    """Run the MQTT ingestion bridge alone (SOCIETY5_MQTT_URL) until Ctrl-C / MQTT取り込みを単独で実行"""
    import signal
    import threading

    from society5.broker.mqtt import BridgeConfig, running
    from society5.broker.service import service as broker_service
    from society5.core.errors import ConfigError
    from society5.core.logs import configure
    from society5.core.platform import Platform

    settings = Settings()
    configure(settings.log_level)
    try:
        if not settings.mqtt_url:
            raise ConfigError("set SOCIETY5_MQTT_URL (e.g. mqtt://127.0.0.1:1883) to run the MQTT bridge")
        config = BridgeConfig.from_settings(settings)
    except ConfigError as err:
        console.print(f"[red]{err}[/red]")
        raise typer.Exit(2) from err
    plat = Platform.open(settings)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    console.print(f"MQTT bridge: {config.where}, topics {', '.join(config.topic_filters())} (Ctrl-C stops)")
    broker_service.on_startup(plat)  # type: ignore[misc]
    try:
        with running(plat.parts["broker"], config) as bridge:
            try:
                while not done.wait(60):
                    logging.getLogger(__name__).info("MQTT bridge: %s", bridge.stats)
            except KeyboardInterrupt:
                pass
    finally:
        if broker_service.on_shutdown is not None:
            broker_service.on_shutdown(plat)
        plat.close()
    console.print(f"MQTT bridge stopped: {bridge.stats}")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema / スキーマを作成・更新"""
    from society5.core.db import current_revision, make_engine, upgrade

    engine = make_engine(Settings())
    upgrade(engine)
    print(f"schema at revision {current_revision(engine)}")


@keys_app.command("create")
def keys_create(
    role: str = typer.Option(..., help="admin, operator, device or reader"),
    tenant: str = typer.Option(None, help="tenant (6-digit municipality code)"),
    entity_prefix: str = typer.Option(None, help="device keys: ids they may write start with this"),
    label: str = typer.Option("", help="a note for people"),
) -> None:
    """Create an API key; the key alone is printed on the last line / APIキーを作成"""
    from society5.core.errors import ApiError

    plat = _platform()
    try:
        new = plat.keys.create(role, tenant=tenant, entity_prefix=entity_prefix, label=label)  # type: ignore[attr-defined]
    except ApiError as err:
        console.print(f"[red]{err.detail}[/red]")
        raise typer.Exit(2) from err
    console.print(
        f"created key {new.key_id} ({role}{', tenant ' + tenant if tenant else ''}); it is shown once:"
    )
    print(new.key)


@keys_app.command("list")
def keys_list() -> None:
    """List API keys (never the secrets) / APIキー一覧"""
    plat = _platform()
    table = Table("key_id", "role", "tenant", "entity_prefix", "label", "created_at", "revoked_at")
    for row in plat.keys.list():  # type: ignore[attr-defined]
        table.add_row(
            *(
                str(row.get(c) or "")
                for c in ("key_id", "role", "tenant", "entity_prefix", "label", "created_at", "revoked_at")
            )
        )
    Console(width=None if sys.stdout.isatty() else 200).print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke an API key / APIキーを失効"""
    from society5.core.errors import ApiError

    try:
        _platform().keys.revoke(key_id)  # type: ignore[attr-defined]
    except ApiError as err:
        console.print(f"[red]{err.detail}[/red]")
        raise typer.Exit(1) from err
    print(f"revoked {key_id}")


@users_app.command("create")
def users_create(
    username: str,
    role: str = typer.Option("operator"),
    tenant: str = typer.Option(None),
    password: str = typer.Option(..., prompt=True, hide_input=True, confirmation_prompt=True),
    display_name: str = typer.Option(""),
) -> None:
    """Create or reset a staff account / 職員アカウントを作成"""
    from society5.core.errors import ApiError

    try:
        _platform().users.create(username, password, role, tenant, display_name)  # type: ignore[attr-defined]
    except ApiError as err:
        console.print(f"[red]{err.detail}[/red]")
        raise typer.Exit(2) from err
    print(f"user {username} ({role}) saved")


def _add_service_groups() -> None:
    from society5.core.service import discover

    for svc in discover():
        if svc.cli is not None:
            app.add_typer(svc.cli, name=svc.name)


def main() -> None:
    try:
        _add_service_groups()
    except Exception:  # a broken add-on must not break the core commands
        logging.getLogger(__name__).exception("loading service commands failed")
    app(prog_name="society5")


if __name__ == "__main__":
    main()
    sys.exit(0)
