"""CKAN's datastore actions (``datastore_create``, ``_upsert``, ``_delete``, ``_info``, ``_search``).

Semantics and result shapes follow CKAN 2.10. The catalog is reached only through its actions
(``resource_show``, ``package_show``, ``resource_create``, ``resource_patch``), so the same permission rules
hold: writes need an operator key of the dataset's organization's tenant (or an admin key), and a private
dataset's table is read only with a key that may read it. GET query strings arrive as text, so every
parameter also accepts its JSON or text form (``filters='{"a": 1}'``, ``limit='10'``,
``include_total=false``).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from society5.opendata import datastore as ds
from society5.opendata.actions import (
    ActionContext,
    AuthorizationError,
    CkanError,
    ValidationError,
    action,
    call,
    can_read,
    check_edit,
    require,
)

SEARCH_PARAMS = ("filters", "q", "distinct", "plain", "language", "limit", "offset", "fields", "sort",
                 "include_total", "total_estimation_threshold", "records_format")
RECORD_FORMATS = ("objects", "lists", "csv", "tsv")
READ_ONLY = ['Cannot edit read-only resource. Either pass "force=True" or change url_type to "datastore" '
             "(アップロードされたファイルのテーブルです。force=True を指定してください)"]


# --- parameters ---------------------------------------------------------------------------------------------


def as_bool(data: dict[str, Any], name: str, default: bool) -> bool:
    value = data.get(name)
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    text = value.strip().lower() if isinstance(value, str) else None
    if text in ("true", "1", "yes", "on", "false", "0", "no", "off"):
        return text in ("true", "1", "yes", "on")
    raise ValidationError({name: ["Must be true or false"]})


# Offsets and thresholds past this are no table's: refused before they overflow SQL's BIGINT.
INT_MAX = 2**53 - 1


def as_int(data: dict[str, Any], name: str, default: int | None, minimum: int = 0) -> int | None:
    value = data.get(name)
    if value is None or value == "":
        return default
    try:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError
        number = int(value)
    except (TypeError, ValueError):
        raise ValidationError({name: ["Invalid integer"]}) from None
    if number < minimum:
        raise ValidationError({name: [f"Must be a natural number (at least {minimum})"]})
    if number > INT_MAX:
        raise ValidationError({name: [f"Must be at most {INT_MAX}"]})
    return number


def as_json(data: dict[str, Any], name: str, *, objects_only: bool = False) -> Any:
    """A parameter that may arrive as JSON text (GET) or as the value itself (POST)."""
    value = data.get(name)
    if isinstance(value, str) and value.lstrip()[:1] in (("{",) if objects_only else ("{", "[")):
        try:
            return json.loads(value)
        except ValueError:
            if objects_only:
                raise ValidationError({name: ["Could not parse as a JSON object"]}) from None
            raise ValidationError({name: ["Could not parse as JSON"]}) from None
    return value


def _records(data: dict[str, Any], required: bool) -> list[Any] | None:
    records = as_json(data, "records")
    if records is None:
        if required:
            raise ValidationError({"records": ["Missing value"]})
        return None
    if not isinstance(records, list):
        raise ValidationError({"records": ["Must be a list of objects"]})
    return records


# --- the catalog side ---------------------------------------------------------------------------------------


def _resource(ctx: ActionContext, resource_id: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The resource and its dataset (Not Found / Authorization errors come from the catalog's actions)."""
    if not isinstance(resource_id, str):
        raise ValidationError({"resource_id": ["Must be a string"]})
    if "\x00" in resource_id:  # names no resource (and PostgreSQL refuses NUL in a query)
        raise ValidationError({"resource_id": ["Must not contain NUL characters (\\u0000)"]})
    resource = call("resource_show", ctx, {"id": resource_id})
    package = call("package_show", ctx, {"id": resource["package_id"]})
    return resource, package


def _tenant(package: dict[str, Any]) -> str:
    organization = package.get("organization") or {}
    return str(organization.get("tenant") or "")


def _for_write(ctx: ActionContext, data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    resource_id = require(data, "resource_id")
    resource, package = _resource(ctx, resource_id)
    check_edit(ctx.principal, _tenant(package))
    # CKAN protects tables loaded from a file (the next load would overwrite edits). Link resources carry no
    # url_type here (CKAN would say "datastore" for them), so only uploads need force.
    if resource.get("url_type") not in (None, "", "datastore") and not as_bool(data, "force", False):
        raise ValidationError({"read-only": READ_ONLY})
    return str(resource["id"]), resource


def _for_read(ctx: ActionContext, resource_id: Any) -> str:
    resource, package = _resource(ctx, resource_id)
    if not can_read(ctx.principal, _tenant(package), bool(package.get("private"))):
        raise AuthorizationError(f"this API token may not read resource {resource_id} "
                                 "(非公開データセットのリソースです)")
    return str(resource["id"])


def _mark_active(ctx: ActionContext, resource: dict[str, Any], active: bool) -> None:
    if bool(resource.get("datastore_active")) != active:
        call("resource_patch", ctx, {"id": resource["id"], "datastore_active": active})


# --- actions ------------------------------------------------------------------------------------------------


def _fields_of(data: dict[str, Any], records: list[Any] | None) -> list[ds.Field] | None:
    raw = as_json(data, "fields")
    if raw is None and records:
        # CKAN infers the fields from the records when none are given: their keys, first seen first.
        names: dict[str, None] = {}
        for record in records:
            if isinstance(record, dict):
                names.update(dict.fromkeys(record))
        raw = [{"id": name} for name in names]
    return None if raw is None else ds.parse_fields(raw, records or [])


def _new_resource(ctx: ActionContext, resource: Any, fields: list[ds.Field] | None,
                  records: list[Any] | None, data: dict[str, Any]) -> dict[str, Any]:
    """``datastore_create`` with ``resource``: checked in full before the resource is created."""
    if not isinstance(resource, dict):
        raise ValidationError({"resource": ["Must be an object with package_id"]})
    if not fields:
        raise ValidationError({"fields": ["Missing value: a new table needs fields (or records)"]})
    ds.convert_records(fields, records or [])
    known = {f.id for f in fields}
    for name in ds.name_list(as_json(data, "primary_key"), "primary_key"):
        if name not in known:
            raise ValidationError({"primary_key": [f"field {name!r} does not exist"]})
    for cols in ds.parse_indexes(as_json(data, "indexes")):
        if not set(cols) <= known:
            raise ValidationError({"indexes": [f"fields {', '.join(cols)}: not all exist"]})
    rid = str(resource.get("id") or uuid.uuid4())
    base = (ctx.base_url or ctx.platform.settings.opendata_site_url or "http://localhost").rstrip("/")
    created: dict[str, Any] = call("resource_create", ctx, {
        **resource, "id": rid, "url": resource.get("url") or f"{base}/datastore/dump/{rid}",
        "url_type": "datastore"})
    return created


@action("datastore_create", write=True)
def datastore_create(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """Create (or extend) a resource's datastore table: resource_id or resource {package_id, …}, fields
    [{id, type, info}], records, primary_key, indexes, force. Creating again with new fields adds columns.
    データストアのテーブルを作成します。"""
    records = _records(data, required=False)
    fields = _fields_of(data, records)
    if data.get("resource") is not None:
        if data.get("resource_id"):
            raise ValidationError({"resource": ["Give resource_id or resource, not both"]})
        resource = _new_resource(ctx, data["resource"], fields, records, data)
        created = True
    else:
        _, resource = _for_write(ctx, data)
        created = False
    rid = str(resource["id"])
    try:
        with ds.write_transaction(ctx.platform.engine) as conn:
            if fields is None and ds.get_spec(conn, rid) is None:
                raise ValidationError({"fields": ["Missing value: a new table needs fields (or records)"]})
            pkey = as_json(data, "primary_key")
            indexes = as_json(data, "indexes")
            spec = ds.create_table(conn, rid, fields or [],
                                   primary_key=pkey if "primary_key" in data else None,
                                   indexes=indexes if "indexes" in data else None)
            if records:
                ds.write_records(conn, spec, ds.convert_records(spec, records), "insert")
    except BaseException:
        if created:  # nothing half-made: the resource goes when its table could not be made
            try:
                call("resource_delete", ctx, {"id": rid})
            except CkanError:
                pass
        raise
    _mark_active(ctx, resource, True)
    result: dict[str, Any] = {"resource_id": rid, "fields": [f.as_dict() for f in spec.fields],
                              "method": "insert", "primary_key": list(spec.primary_key),
                              "indexes": [list(i) for i in spec.indexes]}
    if records is not None:
        result["records"] = records
    if created:
        result["resource"] = call("resource_show", ctx, {"id": rid})
    return result


@action("datastore_upsert", write=True)
def datastore_upsert(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """Write records: method upsert (default; by primary_key or _id), insert or update. All or nothing: one
    bad record is a Validation Error naming its index and field. レコードを追加・更新します。"""
    records = _records(data, required=True)
    method = data.get("method") or "upsert"
    if method not in ("upsert", "insert", "update"):
        raise ValidationError({"method": [f"{method!r} is not one of upsert, insert, update"]})
    rid, _ = _for_write(ctx, data)
    with ds.write_transaction(ctx.platform.engine) as conn:
        spec = ds.require_spec(conn, rid)
        ds.write_records(conn, spec, ds.convert_records(spec, records, allow_id=True), method)
    return {"resource_id": rid, "method": method, "records": records}


@action("datastore_delete", write=True)
def datastore_delete(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """Delete the rows matching filters {field: value | [values]} ({} = every row), or without filters the
    whole table. データストアの行またはテーブルを削除します。"""
    filters = as_json(data, "filters", objects_only=True)
    if filters is not None and not isinstance(filters, dict):
        raise ValidationError({"filters": ["Must be an object {field: value or [values]}"]})
    rid, resource = _for_write(ctx, data)
    with ds.write_transaction(ctx.platform.engine) as conn:
        spec = ds.require_spec(conn, rid)
        if filters is None:
            ds.drop_table(conn, spec)
        else:
            ds.delete_rows(conn, spec, filters)
    if filters is None:
        _mark_active(ctx, resource, False)
        return {"resource_id": rid}
    return {"resource_id": rid, "filters": filters}


@action("datastore_info")
def datastore_info(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """A table's row count, fields (with their database types), primary key and indexes (id or
    resource_id). データストアのテーブル情報。"""
    rid = _for_read(ctx, data.get("id") or require(data, "resource_id"))
    with ctx.platform.engine.connect() as conn:
        return ds.info(conn, ds.require_spec(conn, rid))


def search_query(data: dict[str, Any]) -> ds.SearchQuery:
    """``datastore_search``'s parameters, checked and converted (GET text or POST JSON)."""
    filters = as_json(data, "filters", objects_only=True) or {}
    if not isinstance(filters, dict):
        raise ValidationError({"filters": ["Must be an object {field: value or [values]}"]})
    q = as_json(data, "q", objects_only=True)
    fields = as_json(data, "fields")
    sort = data.get("sort")
    if sort is not None and not isinstance(sort, str):
        if isinstance(sort, list) and all(isinstance(s, str) for s in sort):
            sort = ", ".join(sort)
        else:
            raise ValidationError({"sort": ["Must be a string such as \"field1 asc, field2 desc\""]})
    records_format = data.get("records_format") or "objects"
    if records_format not in RECORD_FORMATS:
        raise ValidationError({"records_format": [f"Must be one of {', '.join(RECORD_FORMATS)}"]})
    as_bool(data, "plain", True)  # checked; matching is always plain (words, not tsquery syntax)
    limit = as_int(data, "limit", ds.DEFAULT_LIMIT)
    return ds.SearchQuery(
        filters=filters, q=q, distinct=as_bool(data, "distinct", False),
        limit=min(limit if limit is not None else ds.DEFAULT_LIMIT, ds.MAX_LIMIT),
        offset=as_int(data, "offset", 0) or 0, fields=fields, sort=sort or None,
        include_total=as_bool(data, "include_total", True),
        total_estimation_threshold=as_int(data, "total_estimation_threshold", None),
        records_format=records_format,
    )


@action("datastore_search")
def datastore_search(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """Search a table: resource_id, filters, q, distinct, plain, limit (default 100, at most 32000), offset,
    fields, sort ("a asc, b desc"), include_total, total_estimation_threshold, records_format
    (objects|lists|csv|tsv). データストアを検索します。"""
    query = search_query(data)
    rid = _for_read(ctx, require(data, "resource_id"))
    with ctx.platform.engine.connect() as conn:
        spec = ds.require_spec(conn, rid)
        return ds.search(conn, spec, query, {k: data[k] for k in SEARCH_PARAMS if k in data})
