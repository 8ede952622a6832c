"""A CSV resource downloaded in another encoding: UTF-8 with BOM (what Excel needs) or Shift_JIS.

``/dataset/{id}/resource/{rid}/csv/{filename}?encoding=utf8bom|sjis|utf8`` re-encodes an uploaded CSV file
(its own encoding detected: UTF-8 with or without BOM, Shift_JIS/CP932) or, for a resource without an
uploaded CSV, exports its datastore table. Either way the rows are streamed (nothing is held whole) and
every cell a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@`` …) is escaped
(``csvio.escape_formula``).
Characters Shift_JIS cannot hold become 〓 (``csvio.iter_csv``). The original file stays at CKAN's own
``…/download/{filename}`` route, byte for byte.

The caller must be allowed to read the dataset (``package_show`` decides, so a private dataset's file is
404 to anyone else, as in the Action API).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from society5.core.auth import ANONYMOUS, Principal
from society5.core.errors import ApiError
from society5.core.http import platform_of
from society5.opendata import catalog_actions, csvio
from society5.opendata.actions import ActionContext, CkanError, NotFoundError, ValidationError, call
from society5.opendata.ckan_http import request_principal, site_base

log = logging.getLogger(__name__)
router = APIRouter(tags=["opendata"])

# URL value → (csvio encoding, file-name suffix, charset parameter of the Content-Type)
ENCODINGS: dict[str, tuple[str, str, str]] = {
    "utf8bom": ("utf-8-sig", "utf8bom", "utf-8"),
    "sjis": ("cp932", "sjis", "Shift_JIS"),
    "utf8": ("utf-8", "utf8", "utf-8"),
}
EXPORT_PAGE = 10_000  # datastore rows fetched per query while exporting


def can_convert(resource: dict[str, Any]) -> bool:
    """Whether a resource has CSV rows to offer in other encodings (an uploaded CSV or a datastore table)."""
    return bool(resource.get("datastore_active")) or (
        resource.get("url_type") == "upload" and _is_csv(resource))


def _is_csv(resource: dict[str, Any]) -> bool:
    name = str(resource.get("url") or "").split("?")[0].lower()
    return str(resource.get("format") or "").upper() == "CSV" or name.endswith(".csv")


def file_name(resource: dict[str, Any], encoding: str) -> str:
    """``aed.csv`` → ``aed_sjis.csv``: two variants never share a name in the downloads folder."""
    base = str(resource.get("url") or resource.get("name") or "data").split("?")[0].rstrip("/")
    base = base.rsplit("/", 1)[-1] or "data"
    stem = base[:-4] if base.lower().endswith(".csv") else base
    return f"{stem}_{ENCODINGS[encoding][1]}.csv"


def variant_url(package_ref: str, resource: dict[str, Any], encoding: str) -> str:
    """The site-relative URL of a resource's CSV in ``encoding`` (``utf8bom``, ``sjis`` or ``utf8``)."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}: use one of {', '.join(ENCODINGS)}")
    name = quote(file_name(resource, encoding), safe="")
    return (f"/dataset/{quote(package_ref, safe='')}/resource/{quote(resource['id'], safe='')}/csv/{name}"
            f"?encoding={encoding}")


def _principal(request: Request) -> Principal:
    """The caller as the Action API sees it (a bad token is an Authorization Error, not anonymous)."""
    try:
        return request_principal(request)
    except ApiError:  # an unreadable session cookie: treated as no session
        return ANONYMOUS


def csv_chunks(ctx: ActionContext, package_ref: str, resource_id: str, encoding: str,
               ) -> tuple[dict[str, Any], Iterator[bytes]]:
    """The resource and its CSV bytes in ``encoding`` (checked here; the iterator streams the rest).

    Raises ``NotFoundError`` when the dataset cannot be read or the resource has no CSV rows, and
    ``ValidationError`` for an unknown encoding or a file that cannot be read as CSV at all.
    """
    if encoding not in ENCODINGS:
        raise ValidationError({"encoding": [f"Must be one of: {', '.join(ENCODINGS)}"]})
    package = call("package_show", ctx, {"id": package_ref})
    resource = next((r for r in package.get("resources", []) if r["id"] == resource_id), None)
    if resource is None:
        raise NotFoundError("Resource was not found. (リソースが見つかりません)")
    target = ENCODINGS[encoding][0]
    if resource.get("url_type") == "upload" and _is_csv(resource):
        return resource, _from_file(ctx, package["id"], resource_id, target)
    if resource.get("datastore_active"):
        return resource, _from_datastore(ctx, resource_id, target)
    raise NotFoundError("This resource has no CSV rows to convert (CSV に変換できるデータがありません)")


def _from_file(ctx: ActionContext, package_id: str, resource_id: str, encoding: str) -> Iterator[bytes]:
    _, path = catalog_actions.resource_file(ctx, package_id, resource_id)
    if not path.is_file():
        raise NotFoundError("Resource file not found (ファイルが見つかりません)")
    try:
        reader = csvio.open_csv(path, max_problems=0)
    except csvio.CsvFormatError as err:
        raise ValidationError({"upload": [str(err)]}) from err
    if reader.header is None:
        reader.close()
        raise ValidationError({"upload": ["The file is empty (ファイルが空です)"]})

    def rows() -> Iterator[list[str]]:
        try:
            for row in reader:
                yield row.values
        except csvio.CsvFormatError as err:  # bytes that stop decoding mid-file: the download ends there
            log.warning("CSV download of resource %s stopped at line %s: %s", resource_id, err.line, err)
        finally:
            reader.close()

    return csvio.iter_csv(reader.header, rows(), encoding=encoding)


def _from_datastore(ctx: ActionContext, resource_id: str, encoding: str) -> Iterator[bytes]:
    first = call("datastore_search", ctx, {"resource_id": resource_id, "limit": EXPORT_PAGE, "offset": 0,
                                           "records_format": "lists", "include_total": False})
    names = [f["id"] for f in first["fields"]]
    keep = [i for i, n in enumerate(names) if n != "_id"]

    def rows() -> Iterator[list[Any]]:
        page, offset = first, 0
        while True:
            for record in page["records"]:
                yield [_text(record[i]) for i in keep]
            if len(page["records"]) < EXPORT_PAGE:
                return
            offset += EXPORT_PAGE
            page = call("datastore_search", ctx, {"resource_id": resource_id, "limit": EXPORT_PAGE,
                                                  "offset": offset, "records_format": "lists",
                                                  "include_total": False})

    return csvio.iter_csv([names[i] for i in keep], rows(), encoding=encoding)


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _error(err: CkanError) -> JSONResponse:
    return JSONResponse({"success": False, "error": err.error()}, status_code=err.status)


@router.get("/dataset/{package_id}/resource/{resource_id}/csv/{filename}",
            summary="Download a CSV resource as UTF-8 with BOM or Shift_JIS (formula cells escaped)")
def download_csv(package_id: str, resource_id: str, filename: str, request: Request,
                 encoding: str = "utf8bom") -> Response:
    """The resource's rows as CSV in ``encoding`` (utf8bom, sjis or utf8), streamed."""
    try:
        ctx = ActionContext(platform_of(request), _principal(request), site_base(request))
        resource, chunks = csv_chunks(ctx, package_id, resource_id, encoding)
    except CkanError as err:
        return _error(err)
    name = file_name(resource, encoding)
    charset = ENCODINGS[encoding][2]
    return StreamingResponse(chunks, media_type=f"text/csv; charset={charset}", headers={
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(name)}",
        "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
    })


@router.get("/datastore/dump/{resource_id}",
            summary="A datastore table as CSV (CKAN's dump URL; bom=true or encoding=utf8bom|sjis|utf8)")
def datastore_dump(resource_id: str, request: Request, bom: bool = False,
                   encoding: str | None = None) -> Response:
    """A resource's datastore rows, streamed; a private dataset's need a token that may read them."""
    try:
        ctx = ActionContext(platform_of(request), _principal(request), site_base(request))
        chosen = encoding or ("utf8bom" if bom else "utf8")
        if chosen not in ENCODINGS:
            raise ValidationError({"encoding": [f"Must be one of: {', '.join(ENCODINGS)}"]})
        resource = call("resource_show", ctx, {"id": resource_id})
        if not resource.get("datastore_active"):
            raise NotFoundError("This resource has no datastore table (データストアにありません)")
        chunks = _from_datastore(ctx, resource_id, ENCODINGS[chosen][0])
    except CkanError as err:
        return _error(err)
    return StreamingResponse(chunks, media_type=f"text/csv; charset={ENCODINGS[chosen][2]}", headers={
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(resource_id)}.csv",
        "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
    })
