"""What an uploaded CSV sets off: a check before anything is published, then a load into the datastore.

``check_upload`` runs before the catalog write: a CSV that cannot be read (encoding, broken quotes, ragged
rows) or breaks its dataset's declared standard layout (``conforms_to``) is refused with a report per row and
column, and nothing is stored. A file that passes is published at once; its datastore table is then loaded by
an outbox message (``LOAD_KIND``), so a large file neither holds the upload's request open nor is lost if the
server stops halfway (the message is retried after a crash). The resource shows how far the load got:
``datastore_status`` is ``pending`` → ``loading`` (with ``datastore_rows_loaded``) → ``active`` or ``error``
(with ``datastore_error``). A resource created with ``datastore_auto: false`` (a publisher that loads its own,
typed table) is left alone.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Connection

from society5.core.auth import SUPERUSER
from society5.core.outbox import Defer, GiveUp, Message
from society5.opendata import csvio, datastore, files, layouts, validate
from society5.opendata.actions import ActionContext, CkanError, Upload, ValidationError, call

log = logging.getLogger(__name__)

LOAD_KIND = "opendata.datastore_load"
PROGRESS_EVERY = 50_000  # rows between progress notes on the resource
MAX_LISTED = 20  # problems quoted in an upload's error (the whole report rides along as validation_report)


def is_csv(filename: str, fmt: Any = "") -> bool:
    return filename.lower().endswith(".csv") or str(fmt or "").strip().upper() == "CSV"


def layout_of(package: dict[str, Any], data: dict[str, Any]) -> str | None:
    """The standard layout an upload must follow: the resource's own ``conforms_to``, else its dataset's."""
    layout = data.get("conforms_to") or package.get("conforms_to") or None
    if layout is not None and layout not in layouts.ids():
        raise ValidationError({"conforms_to": [f"unknown standard layout {layout!r}; known: "
                                               f"{', '.join(layouts.ids())}"]})
    return layout


def check_upload(ctx: ActionContext, package: dict[str, Any], upload: Upload,
                 data: dict[str, Any]) -> dict[str, Any]:
    """Validate an uploaded CSV before it is published; the resource fields that record the outcome.

    Raises a Validation Error whose ``upload`` member lists the problems (Japanese, then English) and whose
    ``validation_report`` is the whole report, so an officer's tool can show it row by row."""
    if not is_csv(upload.filename, data.get("format")):
        return {}
    layout_id = layout_of(package, data)
    settings = ctx.platform.settings
    report = validate.validate_file(upload.path, layout_id, max_bytes=settings.opendata_max_upload_mb << 20)
    if not report.ok:
        listed = [f"{p.line}行目 {p.column or ''}: {p.message_ja} / {p.message_en}".replace(" : ", ": ")
                  for p in report.problems if p.severity == "error"][:MAX_LISTED]
        raise ValidationError({"upload": [report.summary_ja, report.summary_en, *listed]},
                              f"the CSV file was not published: {report.summary_en}",
                              extra={"validation_report": report.as_dict()})
    return {"validation_status": "success" if not report.warnings else "warnings",
            "validation_layout": layout_id, "validation_rows": report.total_rows,
            "validation_warnings": report.warnings, "encoding": report.encoding}


def wants_load(resource: dict[str, Any]) -> bool:
    return resource.get("url_type") == "upload" and resource.get("datastore_auto", True) is not False \
        and is_csv(str(resource.get("url", "")).rsplit("/", 1)[-1], resource.get("format"))


def enqueue_load(ctx: ActionContext, conn: Connection, resource: dict[str, Any]) -> None:
    """Inside the catalog write's transaction: load this upload into the datastore once it is published."""
    payload = {"resource_id": resource["id"], "hash": resource.get("hash")}
    ctx.platform.outbox.enqueue(conn, LOAD_KIND, payload, key=resource["id"])


def register(platform: Any) -> None:
    if LOAD_KIND not in platform.outbox.handlers:
        platform.outbox.register(LOAD_KIND, lambda message: load_message(platform, message))


def load_message(platform: Any, message: Message) -> None:
    """Outbox handler: load the resource's file as it was uploaded (a newer upload has its own message)."""
    ctx = ActionContext(platform, SUPERUSER, base_url=platform.settings.opendata_site_url)
    rid = message.payload["resource_id"]
    try:
        resource = call("resource_show", ctx, {"id": rid})
    except CkanError as err:
        raise GiveUp(f"resource {rid} is gone: {err.message}") from err
    if resource.get("hash") != message.payload.get("hash"):
        return  # replaced since: the newer upload's own message loads it
    path = files.resource_path(platform.settings, rid)
    want = str(resource.get("hash", "")).removeprefix("sha256:")
    for _ in range(40):  # the commit that sent this is done; its file is moved into place right after
        if path.exists() and _sha256(path) == want:
            load_file(ctx, resource, path)
            return
        time.sleep(0.05)
    raise Defer(5.0)


def load_file(ctx: ActionContext, resource: dict[str, Any], path: Path) -> int:
    """Load a published CSV into the resource's datastore table, noting progress on the resource."""
    rid = resource["id"]
    _note(ctx, rid, datastore_status="loading", datastore_rows_loaded=0, datastore_error=None)
    try:
        with csvio.open_csv(path) as reader:
            header = list(reader.header or [])
            fields = _fields(header, resource.get("validation_layout"))
            result = datastore.load_rows(ctx.platform.engine, rid, fields, _counted(ctx, rid, reader),
                                         replace=True, first_row=2)
    except (CkanError, csvio.CsvFormatError) as err:
        message = err.message if isinstance(err, CkanError) else err.message_en
        log.warning("loading resource %s into the datastore failed: %s", rid, message)
        _note(ctx, rid, datastore_status="error", datastore_error=str(message)[:2000], datastore_active=False)
        raise GiveUp(str(message)) from err
    _note(ctx, rid, datastore_status="active", datastore_rows_loaded=result.rows, datastore_active=True)
    return result.rows


def _fields(header: Sequence[str], layout_id: str | None) -> list[datastore.Field]:
    """Typed columns when the file follows its layout's columns exactly, else text (nothing lost)."""
    if layout_id:
        typed = layouts.datastore_fields(layout_id)
        if [f["id"] for f in typed] == list(header):
            return [datastore.Field(f["id"], f["type"], f.get("info")) for f in typed]
    return [datastore.Field(name, "text") for name in header]


def _counted(ctx: ActionContext, rid: str, reader: csvio.CsvReader) -> Iterator[list[str]]:
    for n, row in enumerate(reader, start=1):
        if n % PROGRESS_EVERY == 0:
            _note(ctx, rid, datastore_rows_loaded=n)
        yield row.values


def _note(ctx: ActionContext, rid: str, **fields: Any) -> None:
    call("resource_patch", ctx, {"id": rid, **fields})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
