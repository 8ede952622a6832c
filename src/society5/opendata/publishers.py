"""Datasets fed by the broker: a binding (entity type, filter, shape) keeps a CSV and a GeoJSON resource and
the CSV's datastore table up to date, on a schedule and when the entities change.

Stable URLs: the resources are made once, at ``publisher_create``; each regeneration replaces their files
through ``resource_patch`` with an upload of the same file name, so the resource ids and download URLs never
change, and the catalog swaps each file in with one rename (a download gets the old file or the new one,
never half). The datastore table is reloaded by ``datastore.load_rows``, which swaps a complete new table in
one transaction.

Actions (CKAN style, ``@action``): ``publisher_create``, ``publisher_show``, ``publisher_list``,
``publisher_delete`` and ``publisher_run`` (regenerate now). Writers are the editors of the dataset's
organization (``check_edit``); readers are whoever may read the dataset.

Several server processes: a scheduled run is claimed by moving ``next_run_at`` with a compare-and-set
``UPDATE``, so one process runs it; a change-triggered run happens in the process whose outbox worker
delivered the change (``jobs``).
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa

from society5.core.auth import SUPERUSER
from society5.core.db import JsonDoc, metadata
from society5.opendata import csvio, publish_broker, publish_shapes
from society5.opendata import datastore as ds
from society5.opendata.actions import (
    ActionContext,
    CkanError,
    NotFoundError,
    Upload,
    ValidationError,
    action,
    call,
    check_edit,
    require,
)
from society5.opendata.publish_spec import SPEC_KEYS, PublisherSpec, parse_spec

log = logging.getLogger(__name__)

publishers = sa.Table(
    "opendata_publishers",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("package_id", sa.String(36), nullable=False, index=True),
    sa.Column("tenant", sa.String(64), nullable=False),  # the dataset organization's: whose editors manage it
    sa.Column("spec", JsonDoc, nullable=False),
    sa.Column("csv_resource_id", sa.String(36), nullable=False),
    sa.Column("geojson_resource_id", sa.String(36), nullable=False),
    sa.Column("every_s", sa.Integer, nullable=False),
    sa.Column("next_run_at", sa.String(32), nullable=False, index=True),
    sa.Column("last_run_at", sa.String(32), nullable=True),
    sa.Column("last_rows", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("runs", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created", sa.String(32), nullable=False),
)

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _stamp(moment: datetime | None = None) -> str:
    """Fixed-width UTC text: ordered as text the way it is ordered in time."""
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def system_context(platform: Any) -> ActionContext:
    """The context scheduled regenerations run in: the platform itself, not any caller."""
    return ActionContext(platform, SUPERUSER, base_url=platform.settings.opendata_site_url)


def _lock(publisher_id: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(publisher_id, threading.Lock())


# --- building and writing the files ---------------------------------------------------------------------


def build(platform: Any, spec: PublisherSpec, now: datetime | None = None) -> publish_shapes.Table:
    """The table the binding publishes now."""
    if spec.shape == "time_bins":
        start, end = publish_shapes.bin_window(now or datetime.now(UTC), spec)
        return publish_shapes.time_bins(publish_broker.site_series(platform, spec, start, end), spec)
    return publish_shapes.snapshot(publish_broker.entities(platform, spec), spec)


class _Files:
    """The CSV (UTF-8 with BOM, for Excel) and GeoJSON of a table, in temporary files until uploaded."""

    def __init__(self, platform: Any, spec: PublisherSpec, table: publish_shapes.Table):
        spool = Path(platform.settings.opendata_dir) / "tmp"
        spool.mkdir(parents=True, exist_ok=True)
        self.paths: list[str] = []
        self.csv = self._write(spool, f"{spec.file_name}.csv",
                               lambda p: csvio.write_csv(p, table.header, table.rows, encoding="utf-8-sig"))
        self.geojson = self._write(spool, f"{spec.file_name}.geojson",
                                   lambda p: Path(p).write_bytes(orjson.dumps(table.geojson())))

    def _write(self, spool: Path, filename: str, writer: Any) -> Upload:
        handle, path = tempfile.mkstemp(prefix="publish-", dir=spool)
        os.close(handle)
        self.paths.append(path)
        writer(path)
        return Upload(filename=filename, path=path, size=os.path.getsize(path))

    def close(self) -> None:
        for path in self.paths:
            Path(path).unlink(missing_ok=True)


def _load_datastore(ctx: ActionContext, resource_id: str, table: publish_shapes.Table) -> None:
    fields = [ds.Field(name, kind) for name, kind in zip(table.header, table.types, strict=True)]
    ds.load_rows(ctx.platform.engine, resource_id, fields, table.rows, replace=True)
    resource = call("resource_show", ctx, {"id": resource_id})
    if not resource.get("datastore_active"):
        call("resource_patch", ctx, {"id": resource_id, "datastore_active": True})


# --- the stored rows ------------------------------------------------------------------------------------


def _row(platform: Any, publisher_id: Any) -> dict[str, Any]:
    if not isinstance(publisher_id, str) or not publisher_id:
        raise ValidationError({"id": ["Missing value"]})
    if "\x00" in publisher_id:  # names nothing, and PostgreSQL refuses NUL in a query's text
        raise NotFoundError("Publisher not found (パブリッシャーが見つかりません)")
    with platform.engine.connect() as conn:
        row = conn.execute(sa.select(publishers).where(publishers.c.id == publisher_id)).mappings().first()
    if row is None:
        raise NotFoundError("Publisher not found (パブリッシャーが見つかりません)")
    return dict(row)


def _shown(row: dict[str, Any]) -> dict[str, Any]:
    spec = dict(row["spec"])
    return {"id": row["id"], "package_id": row["package_id"], **spec,
            "csv_resource_id": row["csv_resource_id"], "geojson_resource_id": row["geojson_resource_id"],
            "next_run_at": row["next_run_at"], "last_run_at": row["last_run_at"],
            "last_rows": row["last_rows"], "last_error": row["last_error"], "runs": row["runs"],
            "created": row["created"]}


def spec_of(row: dict[str, Any]) -> PublisherSpec:
    return parse_spec(dict(row["spec"]), row["tenant"])


def all_rows(platform: Any) -> list[dict[str, Any]]:
    with platform.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(publishers).order_by(publishers.c.created))
                .mappings()]


# --- regeneration ---------------------------------------------------------------------------------------


def regenerate(platform: Any, publisher_id: str) -> dict[str, Any]:
    """Rebuild a publisher's files and table now; the outcome (rows or error) is recorded on its row."""
    with _lock(publisher_id):
        row = _row(platform, publisher_id)
        ctx = system_context(platform)
        error: str | None = None
        rows: int | None = None
        try:
            spec = spec_of(row)
            table = build(platform, spec)
            files = _Files(platform, spec, table)
            try:
                for rid, upload in ((row["csv_resource_id"], files.csv),
                                    (row["geojson_resource_id"], files.geojson)):
                    ctx.uploads = {"upload": upload}
                    call("resource_patch", ctx, {"id": rid})
                ctx.uploads = {}
                _load_datastore(ctx, row["csv_resource_id"], table)
            finally:
                files.close()
            rows = len(table.rows)
        except (CkanError, publish_broker.BrokerMissing, OSError) as err:
            error = str(err)[:2000]
            log.warning("publisher %s could not regenerate: %s", publisher_id, error)
        now = datetime.now(UTC)
        values: dict[str, Any] = {"last_run_at": _stamp(now), "last_error": error,
                                  "runs": publishers.c.runs + 1,
                                  "next_run_at": _stamp(now + timedelta(seconds=row["every_s"]))}
        if rows is not None:
            values["last_rows"] = rows
        with platform.engine.begin() as conn:
            conn.execute(publishers.update().where(publishers.c.id == publisher_id).values(**values))
        return _shown(_row(platform, publisher_id))


def claim_due(platform: Any, now: datetime | None = None) -> list[str]:
    """Publishers whose schedule has come, each claimed for this process by moving its ``next_run_at``."""
    moment = now or datetime.now(UTC)
    claimed: list[str] = []
    with platform.engine.connect() as conn:
        due = conn.execute(sa.select(publishers.c.id, publishers.c.next_run_at, publishers.c.every_s)
                           .where(publishers.c.next_run_at <= _stamp(moment))).all()
    for pid, old, every in due:
        with platform.engine.begin() as conn:
            moved = conn.execute(publishers.update().where(publishers.c.id == pid,
                                                           publishers.c.next_run_at == old)
                                 .values(next_run_at=_stamp(moment + timedelta(seconds=every))))
        if moved.rowcount == 1:
            claimed.append(pid)
    return claimed


# --- actions --------------------------------------------------------------------------------------------


def _package_tenant(package: dict[str, Any]) -> str:
    return str((package.get("organization") or {}).get("tenant") or "")


def _create_resource(ctx: ActionContext, package_id: str, upload: Upload, name: str, fmt: str,
                     description: str) -> dict[str, Any]:
    ctx.uploads = {"upload": upload}
    try:
        created: dict[str, Any] = call("resource_create", ctx, {
            "package_id": package_id, "name": name, "format": fmt, "description": description,
            "datastore_auto": False})  # its typed table is loaded here (_load_datastore), not as text
    finally:
        ctx.uploads = {}
    return created


@action("publisher_create", write=True)
def publisher_create(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """Bind dataset ``package_id`` to broker entities: ``entity_type``, ``q``, ``attrs``, ``tenant``,
    ``public_only`` (default true), ``shape`` (snapshot | time_bins), ``coordinate_digits``,
    ``every_minutes``, and for time_bins ``count_attr``, ``bin_minutes``, ``window_days``, ``aggregate``,
    ``direction_attr``, ``site_attr``, ``fill_gaps``. Creates its CSV (with a datastore table) and GeoJSON
    resources and fills them now. ブローカーのエンティティからデータセットを自動生成します。"""
    package = call("package_show", ctx, {"id": require(data, "package_id")})
    org_tenant = _package_tenant(package)
    check_edit(ctx.principal, org_tenant, f"dataset {package['name']}")
    spec = parse_spec({k: data[k] for k in SPEC_KEYS if k in data}, org_tenant)
    problems: dict[str, list[str]] = {}
    if spec.tenant != org_tenant and not ctx.principal.is_admin:
        problems["tenant"] = ["Only an admin may publish another tenant's entities "
                              f"(this dataset's tenant is {org_tenant})"]
    if not spec.public_only and not package.get("private"):
        problems["public_only"] = ["Non-public entities may be published only into a private dataset "
                                   "(公開データセットには公開エンティティのみ)"]
    if problems:
        raise ValidationError(problems)
    try:
        table = build(ctx.platform, spec)
    except publish_broker.BrokerMissing as err:
        raise ValidationError({"entity_type": [str(err)]}) from err
    files = _Files(ctx.platform, spec, table)
    made: list[str] = []
    try:
        label = f"{spec.entity_type} ({'15分毎' if spec.bin_minutes == 15 else f'{spec.bin_minutes}分毎'})" \
            if spec.shape == "time_bins" else spec.entity_type
        note = ("データ連携基盤から自動生成 / generated from the broker "
                f"(every {spec.every_minutes} min and on change)")
        csv_res = _create_resource(ctx, package["id"], files.csv, f"{label} CSV", "CSV", note)
        made.append(csv_res["id"])
        geo_res = _create_resource(ctx, package["id"], files.geojson, f"{label} GeoJSON", "GeoJSON", note)
        made.append(geo_res["id"])
        _load_datastore(system_context(ctx.platform), csv_res["id"], table)
        now = datetime.now(UTC)
        row = {"id": _new_id(), "package_id": package["id"], "tenant": org_tenant, "spec": spec.as_dict(),
               "csv_resource_id": csv_res["id"], "geojson_resource_id": geo_res["id"],
               "every_s": spec.every_minutes * 60, "created": _stamp(now), "last_run_at": _stamp(now),
               "last_rows": len(table.rows), "runs": 1,
               "next_run_at": _stamp(now + timedelta(minutes=spec.every_minutes))}
        with ctx.platform.engine.begin() as conn:
            conn.execute(publishers.insert().values(**row))
    except BaseException:
        system = system_context(ctx.platform)
        for rid in made:  # nothing half-made: the resources go when the binding could not be stored
            try:
                call("resource_delete", system, {"id": rid})
            except CkanError:
                log.warning("could not remove resource %s of a failed publisher_create", rid)
        raise
    finally:
        files.close()
    _watch_new(ctx.platform)
    return _shown(_row(ctx.platform, row["id"]))


def _new_id() -> str:
    import uuid

    return str(uuid.uuid4())


def _watch_new(platform: Any) -> None:
    from society5.opendata import jobs  # jobs imports this module

    jobs.watcher_of(platform).sync(platform)


def _readable(ctx: ActionContext, row: dict[str, Any]) -> bool:
    try:
        call("package_show", ctx, {"id": row["package_id"]})
    except NotFoundError:
        return False
    return True


@action("publisher_show")
def publisher_show(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """A publisher by ``id``: its binding, resources, schedule and last run. パブリッシャーの詳細。"""
    row = _row(ctx.platform, require(data, "id"))
    if not _readable(ctx, row):
        raise NotFoundError("Publisher not found (パブリッシャーが見つかりません)")
    return _shown(row)


@action("publisher_list")
def publisher_list(ctx: ActionContext, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The publishers of datasets the caller may read; ``package_id`` narrows to one dataset.
    パブリッシャーの一覧。"""
    wanted = data.get("package_id")
    if wanted is not None and not isinstance(wanted, str):
        raise ValidationError({"package_id": ["Must be a string"]})
    if wanted:
        wanted = call("package_show", ctx, {"id": wanted})["id"]
    rows = [r for r in all_rows(ctx.platform) if not wanted or r["package_id"] == wanted]
    return [_shown(r) for r in rows if _readable(ctx, r)]


@action("publisher_delete", write=True)
def publisher_delete(ctx: ActionContext, data: dict[str, Any]) -> None:
    """Stop a publisher (``id``). Its resources stay as last generated unless ``delete_resources`` is
    true. パブリッシャーを削除します。"""
    row = _row(ctx.platform, require(data, "id"))
    if not _readable(ctx, row):
        raise NotFoundError("Publisher not found (パブリッシャーが見つかりません)")
    check_edit(ctx.principal, row["tenant"], "this dataset's publishers")
    drop = data.get("delete_resources") in (True, "true", "1", 1)
    with ctx.platform.engine.begin() as conn:
        conn.execute(publishers.delete().where(publishers.c.id == row["id"]))
    if drop:
        for rid in (row["csv_resource_id"], row["geojson_resource_id"]):
            try:
                call("resource_delete", ctx, {"id": rid})
            except NotFoundError:
                pass
    from society5.opendata import jobs

    jobs.watcher_of(ctx.platform).sync(ctx.platform)


@action("publisher_run", write=True)
def publisher_run(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """Regenerate a publisher's resources now (``id``); ``last_error`` says what went wrong, if anything.
    今すぐ再生成します。"""
    row = _row(ctx.platform, require(data, "id"))
    if not _readable(ctx, row):
        raise NotFoundError("Publisher not found (パブリッシャーが見つかりません)")
    check_edit(ctx.principal, row["tenant"], "this dataset's publishers")
    return regenerate(ctx.platform, row["id"])
