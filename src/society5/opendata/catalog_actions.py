"""The catalog's CKAN actions: site, licences, organizations, groups, tags, datasets and resources.

Each action is ``fn(ctx, data)`` with CKAN 2.10's name, parameters and result shape. Writers: organizations
and groups are the admin's; a dataset and its resources belong to its organization's tenant, whose operators
(and admins) edit them (``actions.check_edit``). Private datasets, drafts and deleted ones answer 404 to
whoever may not read them, as if they did not exist.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from society5 import __version__
from society5.opendata import catalog, datastore, files, ingest, search
from society5.opendata import tables as t
from society5.opendata.actions import (
    ACTIONS,
    ActionContext,
    AuthorizationError,
    NotFoundError,
    ValidationError,
    action,
    can_read,
    check_edit,
    require,
)

CKAN_VERSION = "2.10.4"
LIST_MAX = 1000


def base_url(ctx: ActionContext) -> str:
    return ctx.platform.settings.opendata_site_url or ctx.base_url


def _may_edit(ctx: ActionContext, tenant: str) -> bool:
    try:
        check_edit(ctx.principal, tenant)
    except AuthorizationError:
        return False
    return True


def _require_admin(ctx: ActionContext, what: str) -> None:
    if not ctx.principal.is_admin:
        raise AuthorizationError(f"only an admin may {what} (管理者のみ実行できます)")


def _limit(data: dict[str, Any], default: int = LIST_MAX) -> tuple[int, int]:
    problems = catalog.Problems()
    limit = catalog.as_int(data.get("limit"), problems, "limit")
    offset = catalog.as_int(data.get("offset"), problems, "offset")
    problems.raise_if_any()
    return min(LIST_MAX, default if limit is None else limit), offset or 0


# ---------------------------------------------------------------- site


@action("status_show")
def status_show(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """The site's name and CKAN API version (CKAN clients check ``ckan_version``)."""
    settings = ctx.platform.settings
    return {"site_title": settings.opendata_site_title, "site_description": "",
            "site_url": base_url(ctx), "ckan_version": CKAN_VERSION, "error_emails_to": None,
            "locale_default": "ja", "extensions": ["society5", "datastore", "dcat"],
            "society5_version": __version__}


@action("site_read")
def site_read(ctx: ActionContext, data: dict[str, Any]) -> bool:
    """Whether the caller may read the site (always true: the catalog is public)."""
    return True


@action("help_show")
def help_show(ctx: ActionContext, data: dict[str, Any]) -> str:
    """The documentation of the action named ``name``."""
    name = require(data, "name")
    if not isinstance(name, str):
        raise ValidationError({"name": ["Must be a string (an action name)"]})
    found = ACTIONS.get(name)
    if found is None:
        raise NotFoundError(f"Action function not found: {name}")
    return found.help


@action("license_list")
def license_list(ctx: ActionContext, data: dict[str, Any]) -> list[dict[str, Any]]:
    """The licences a dataset may carry (``license_id``); CC BY 4.0 is the default."""
    return [dict(lic) for lic in catalog.LICENSES]


# ---------------------------------------------------------------- organizations and groups


def _group_counts(conn: Connection, ctx: ActionContext, is_org: bool) -> dict[str, int]:
    seen = search.visible(ctx.principal, include_private=True, include_drafts=False)
    if is_org:
        rows = conn.execute(sa.select(t.packages.c.owner_org, sa.func.count()).where(seen)
                            .group_by(t.packages.c.owner_org)).all()
        return {k: int(v) for k, v in rows}
    terms = t.package_terms
    rows = conn.execute(
        sa.select(terms.c.value, sa.func.count()).join(t.packages, t.packages.c.seq == terms.c.package_seq)
        .where(terms.c.field == "groups", seen).group_by(terms.c.value)).all()
    by_name = {k: int(v) for k, v in rows}
    ids = conn.execute(sa.select(t.groups.c.name, t.groups.c.id)).all()
    return {gid: by_name.get(name, 0) for name, gid in ids}


def _group_list(ctx: ActionContext, data: dict[str, Any], is_org: bool) -> list[Any]:
    limit, offset = _limit(data)
    all_fields = catalog.as_bool(data.get("all_fields"), catalog.Problems(), "all_fields")
    sort = str(data.get("sort") or "").split() or ["title", "asc"]
    column_name, desc = sort[0], len(sort) > 1 and sort[1].lower() == "desc"
    if column_name not in ("name", "title", "package_count") or (len(sort) > 1 and sort[1].lower()
                                                                 not in ("asc", "desc")):
        raise ValidationError({"sort": ["Sort by name, title or package_count, then asc or desc"]})
    g = t.groups
    query = sa.select(g).where(g.c.is_organization == is_org, g.c.state == "active")
    wanted = catalog._json_value(data.get("organizations" if is_org else "groups"))
    if isinstance(wanted, list) and wanted:
        query = query.where(g.c.name.in_([str(w) for w in wanted]))
    if data.get("q"):
        pattern = f"%{str(data['q']).lower()}%"
        query = query.where(sa.or_(sa.func.lower(g.c.name).like(pattern),
                                   sa.func.lower(g.c.title).like(pattern)))
    with catalog.db(ctx.platform).connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
        counts = _group_counts(conn, ctx, is_org)
    key: Any = {"name": lambda r: r["name"], "title": lambda r: (r["title"] or r["name"]).lower(),
                "package_count": lambda r: counts.get(r["id"], 0)}[column_name]
    rows.sort(key=lambda r: (key(r), r["name"]), reverse=desc)
    rows = rows[offset: offset + limit]
    if not all_fields:
        return [r["name"] for r in rows]
    return [catalog.group_dict(r, counts.get(r["id"], 0)) for r in rows]


def _group_show(ctx: ActionContext, data: dict[str, Any], is_org: bool) -> dict[str, Any]:
    ref = require(data, "id")
    kind = "Organization" if is_org else "Group"
    with catalog.db(ctx.platform).connect() as conn:
        row = catalog.find_group(conn, ref, is_organization=is_org)
        if row is None:
            raise NotFoundError(f"{kind} not found")
        count = _group_counts(conn, ctx, is_org).get(row["id"], 0)
        out = catalog.group_dict(row, count)
        out.update(users=[], groups=[], tags=[])
        include = data.get("include_datasets")
        if catalog.as_bool(include, catalog.Problems(), "include_datasets"):
            fq = f'{"organization" if is_org else "groups"}:"{row["name"]}"'
            found = search.search(conn, ctx.principal, {"fq": fq, "rows": LIST_MAX, "include_private": True,
                                                        "sort": "title_string asc"}, base_url(ctx))
            out["packages"] = found["results"]
    return out


def _group_create(ctx: ActionContext, data: dict[str, Any], is_org: bool) -> dict[str, Any]:
    _require_admin(ctx, f"create {'organizations' if is_org else 'groups'}")
    with catalog.db(ctx.platform).begin() as conn:
        values = catalog.validate_group(conn, data, is_org)
        conn.execute(t.groups.insert().values(**values))
    return _group_show(ctx, {"id": values["id"]}, is_org)


def _group_update(ctx: ActionContext, data: dict[str, Any], is_org: bool, patch: bool) -> dict[str, Any]:
    _require_admin(ctx, f"edit {'organizations' if is_org else 'groups'}")
    ref = data.get("id") or require(data, "name")
    with catalog.db(ctx.platform).begin() as conn:
        row = catalog.find_group(conn, ref, is_organization=is_org)
        if row is None:
            raise NotFoundError(f"{'Organization' if is_org else 'Group'} not found")
        merged = {**row, **data} if patch else {"tenant": row["tenant"], **data}
        if "name" not in data:
            merged["name"] = row["name"]
        values = catalog.validate_group(conn, merged, is_org, existing=row)
        conn.execute(t.groups.update().where(t.groups.c.id == row["id"]).values(**values))
        if any(values[k] != row[k] for k in ("name", "title", "tenant")):
            conn.execute(t.packages.update().where(t.packages.c.owner_org == row["id"])
                         .values(tenant=values["tenant"]))
            catalog.reindex_owner(conn, row["id"], row["name"])
    return _group_show(ctx, {"id": row["id"]}, is_org)


def _group_delete(ctx: ActionContext, data: dict[str, Any], is_org: bool) -> None:
    _require_admin(ctx, f"delete {'organizations' if is_org else 'groups'}")
    ref = require(data, "id")
    with catalog.db(ctx.platform).begin() as conn:
        row = catalog.find_group(conn, ref, is_organization=is_org)
        if row is None:
            raise NotFoundError(f"{'Organization' if is_org else 'Group'} not found")
        if is_org:
            live = conn.execute(sa.select(sa.func.count()).select_from(t.packages).where(
                t.packages.c.owner_org == row["id"], t.packages.c.state != "deleted")).scalar_one()
            if live:
                raise ValidationError({"message": [
                    f"Organization cannot be deleted while it still has datasets ({live})"]})
        conn.execute(t.groups.update().where(t.groups.c.id == row["id"]).values(state="deleted"))
        if not is_org:
            _drop_group_from_datasets(conn, row)


def _drop_group_from_datasets(conn: Connection, row: dict[str, Any]) -> None:
    terms = t.package_terms
    members = sa.select(terms.c.package_seq).where(terms.c.field == "groups", terms.c.value == row["name"])
    rows = conn.execute(sa.select(t.packages.c.seq, t.packages.c.owner_org, t.package_docs.c.doc)
                        .join(t.package_docs, t.package_docs.c.package_seq == t.packages.c.seq)
                        .where(t.packages.c.seq.in_(members))).all()
    for seq, owner, doc in rows:
        doc = {**doc, "groups": [g for g in doc.get("groups", []) if g != row["id"]]}
        org = catalog.find_group(conn, owner, is_organization=True, active_only=False) or {}
        catalog.save_package(conn, doc, org, seq)


@action("organization_list")
def organization_list(ctx: ActionContext, data: dict[str, Any]) -> list[Any]:
    """Organization names (``all_fields``: their dicts); ``sort`` name|title|package_count, ``limit``,
    ``offset``, ``organizations`` (names to keep), ``q``."""
    return _group_list(ctx, data, True)


@action("organization_show")
def organization_show(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """An organization by ``id`` or name; ``include_datasets`` adds the datasets the caller may read."""
    return _group_show(ctx, data, True)


@action("organization_create", write=True)
def organization_create(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """Create an organization (admin): ``name``, ``title``, ``description``, ``image_url``, ``extras``, and
    ``tenant`` (the 団体コード whose operators edit its datasets)."""
    return _group_create(ctx, data, True)


@action("organization_update", write=True)
def organization_update(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """Replace an organization's fields (admin)."""
    return _group_update(ctx, data, True, patch=False)


@action("organization_patch", write=True)
def organization_patch(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """Change the given fields of an organization (admin)."""
    return _group_update(ctx, data, True, patch=True)


@action("organization_delete", write=True)
def organization_delete(ctx: ActionContext, data: dict[str, Any]) -> None:
    """Delete an organization that has no datasets left (admin)."""
    _group_delete(ctx, data, True)


@action("group_list")
def group_list(ctx: ActionContext, data: dict[str, Any]) -> list[Any]:
    """Group (category) names, or their dicts with ``all_fields``; as ``organization_list``."""
    return _group_list(ctx, data, False)


@action("group_show")
def group_show(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """A group by ``id`` or name; ``include_datasets`` adds its datasets."""
    return _group_show(ctx, data, False)


@action("group_create", write=True)
def group_create(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """Create a group (category) (admin)."""
    return _group_create(ctx, data, False)


@action("group_update", write=True)
def group_update(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """Replace a group's fields (admin)."""
    return _group_update(ctx, data, False, patch=False)


@action("group_patch", write=True)
def group_patch(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """Change the given fields of a group (admin)."""
    return _group_update(ctx, data, False, patch=True)


@action("group_delete", write=True)
def group_delete(ctx: ActionContext, data: dict[str, Any]) -> None:
    """Delete a group (admin); its datasets stay, without it."""
    _group_delete(ctx, data, False)


@action("tag_list")
def tag_list(ctx: ActionContext, data: dict[str, Any]) -> list[Any]:
    """Tags of the datasets the caller can see; ``query`` keeps those containing it, ``all_fields`` gives
    dicts."""
    terms = t.package_terms
    seen = search.visible(ctx.principal, include_private=True, include_drafts=False)
    query = (sa.select(terms.c.value).distinct().join(t.packages, t.packages.c.seq == terms.c.package_seq)
             .where(terms.c.field == "tags", seen).order_by(terms.c.value))
    text = data.get("query") or data.get("q")
    if text:
        query = query.where(terms.c.value.like(search._like(str(text)), escape="\\"))
    with catalog.db(ctx.platform).connect() as conn:
        names = list(conn.execute(query).scalars())
    if catalog.as_bool(data.get("all_fields"), catalog.Problems(), "all_fields"):
        return [catalog.tag_dict(n) for n in names]
    return names


# ---------------------------------------------------------------- datasets


def _readable_package(conn: Connection, ctx: ActionContext, ref: Any, for_update: bool = False
                      ) -> dict[str, Any]:
    """A dataset the caller may read, else Not Found (private, draft and deleted ones stay invisible)."""
    row = catalog.find_package(conn, ref, for_update=for_update)
    if row is None:
        raise NotFoundError("Dataset not found (データセットが見つかりません)")
    if row["state"] == "deleted" and not _may_edit(ctx, row["tenant"]):
        raise NotFoundError("Dataset not found (データセットが見つかりません)")
    hidden = row["private"] or row["state"] == "draft"
    if not can_read(ctx.principal, row["tenant"], hidden):
        raise NotFoundError("Dataset not found (データセットが見つかりません)")
    return row


def _editable_package(conn: Connection, ctx: ActionContext, ref: Any) -> dict[str, Any]:
    """A dataset the caller may edit, its rows locked until the caller's transaction ends."""
    row = _readable_package(conn, ctx, ref, for_update=True)
    check_edit(ctx.principal, row["tenant"], f"dataset {row['name']}")
    return row


def _show(conn: Connection, ctx: ActionContext, doc: dict[str, Any]) -> dict[str, Any]:
    return catalog.present(conn, [doc], base_url(ctx))[0]


def _uploads_of(doc: dict[str, Any]) -> set[str]:
    return {r["id"] for r in doc.get("resources", []) if r.get("url_type") == "upload"}


@action("package_list")
def package_list(ctx: ActionContext, data: dict[str, Any]) -> list[str]:
    """Names of the public active datasets, sorted; ``limit``, ``offset``."""
    limit, offset = _limit(data, default=LIST_MAX)
    p = t.packages
    with catalog.db(ctx.platform).connect() as conn:
        return list(conn.execute(sa.select(p.c.name).where(p.c.state == "active", p.c.private.is_(False))
                                 .order_by(p.c.name).limit(limit).offset(offset)).scalars())


@action("package_show")
def package_show(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """A dataset by ``id`` or name."""
    ref = data.get("id") or require(data, "name")
    with catalog.db(ctx.platform).connect() as conn:
        return _show(conn, ctx, _readable_package(conn, ctx, ref)["doc"])


@action("package_search")
def package_search(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """Search datasets: ``q``, ``fq``, ``fq_list``, ``rows``, ``start``, ``sort``, ``facet.field``,
    ``facet.limit``, ``facet.mincount``, ``include_private``, ``include_drafts`` (see ``search``)."""
    with catalog.db(ctx.platform).connect() as conn:
        return search.search(conn, ctx.principal, data, base_url(ctx))


@action("package_create", write=True)
def package_create(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """Create a dataset in ``owner_org`` (an operator of that organization's tenant, or an admin)."""
    with catalog.db(ctx.platform).begin() as conn:
        org = catalog.find_group(conn, data.get("owner_org"), is_organization=True)
        if org is not None:
            check_edit(ctx.principal, org["tenant"], f"datasets of {org['name']}")
        doc, org = catalog.validate_package(conn, data, None)
        doc["creator_user_id"] = ctx.principal.name or None
        _save(conn, doc, org)
        return _show(conn, ctx, doc)


def _save(conn: Connection, doc: dict[str, Any], org: dict[str, Any], seq: int | None = None) -> int:
    try:  # the failed statement aborts the whole transaction, which the caller's block rolls back
        return catalog.save_package(conn, doc, org, seq)
    except sa.exc.IntegrityError as err:  # a concurrent writer took the name (or id) first
        raise ValidationError({"name": ["That URL is already in use."]}) from err


def _update(ctx: ActionContext, data: dict[str, Any], patch: bool) -> dict[str, Any]:
    ref = data.get("id") or require(data, "name")
    with catalog.db(ctx.platform).begin() as conn:
        row = _editable_package(conn, ctx, ref)
        old = row["doc"]
        merged = {**old, **data} if patch else dict(data)
        merged["id"] = old["id"]
        if "name" not in data:
            merged["name"] = old["name"]
        merged.setdefault("owner_org", old["owner_org"])
        org = catalog.find_group(conn, merged.get("owner_org"), is_organization=True)
        if org is not None and org["id"] != old["owner_org"]:
            check_edit(ctx.principal, org["tenant"], f"datasets of {org['name']}")
        doc, org = catalog.validate_package(conn, merged, old)
        _save(conn, doc, org, row["seq"])
        shown = _show(conn, ctx, doc)
    for gone in _uploads_of(old) - _uploads_of(doc):
        files.remove(ctx.platform.settings, gone)
    return shown


@action("package_update", write=True)
def package_update(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """Replace a dataset (``id`` or ``name``); fields left out are cleared, except tags, groups and
    resources, which are kept when absent (CKAN 2.10)."""
    return _update(ctx, data, patch=False)


@action("package_patch", write=True)
def package_patch(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """Change the given fields of a dataset, keeping the rest."""
    return _update(ctx, data, patch=True)


@action("package_delete", write=True)
def package_delete(ctx: ActionContext, data: dict[str, Any]) -> None:
    """Mark a dataset deleted: hidden from search and from everyone but its editors."""
    ref = require(data, "id")
    with catalog.db(ctx.platform).begin() as conn:
        row = _editable_package(conn, ctx, ref)
        doc = {**row["doc"], "state": "deleted", "metadata_modified": catalog.now()}
        org = catalog.find_group(conn, row["owner_org"], is_organization=True, active_only=False) or {}
        catalog.save_package(conn, doc, org, row["seq"])


@action("dataset_purge", write=True)
def dataset_purge(ctx: ActionContext, data: dict[str, Any]) -> None:
    """Remove a dataset for good, with its uploaded files (admin)."""
    _require_admin(ctx, "purge datasets")
    ref = require(data, "id")
    with catalog.db(ctx.platform).begin() as conn:
        row = catalog.find_package(conn, ref)
        if row is None:
            raise NotFoundError("Dataset not found (データセットが見つかりません)")
        catalog.purge_package(conn, row["seq"])
        for res in row["doc"].get("resources", []):
            datastore.forget_resource(conn, res["id"])
    for rid in _uploads_of(row["doc"]):
        files.remove(ctx.platform.settings, rid)


# ---------------------------------------------------------------- resources


def _resource_row(conn: Connection, ctx: ActionContext, rid: Any, edit: bool) -> tuple[dict[str, Any], int]:
    """The dataset holding resource ``rid`` and the resource's index in it."""
    if not isinstance(rid, str) or not rid:
        raise ValidationError({"id": ["Missing value"]})
    seq = conn.execute(sa.select(t.resources.c.package_seq).where(t.resources.c.id == rid)).scalar()
    pid = conn.execute(sa.select(t.packages.c.id).where(t.packages.c.seq == seq)).scalar() if seq else None
    if pid is None:
        raise NotFoundError("Resource was not found. (リソースが見つかりません)")
    row = _editable_package(conn, ctx, pid) if edit else _readable_package(conn, ctx, pid)
    index = next(i for i, r in enumerate(row["doc"]["resources"]) if r["id"] == rid)
    return row, index


@action("resource_show")
def resource_show(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """A resource by ``id``."""
    with catalog.db(ctx.platform).connect() as conn:
        row, index = _resource_row(conn, ctx, data.get("id"), edit=False)
    return catalog.present_resource(row["doc"]["resources"][index], index, base_url(ctx))


def _write_resource(ctx: ActionContext, data: dict[str, Any], row_of: Any, patch: bool) -> dict[str, Any]:
    """resource_create (``row_of`` gives the dataset, index None) and resource_update/patch."""
    settings = ctx.platform.settings
    upload = ctx.uploads.get("upload")
    staged: files.StoredFile | None = None
    checked: dict[str, Any] = {}
    if upload is not None:  # checked before the write: a bad file leaves the catalog as it was
        with catalog.db(ctx.platform).connect() as conn:
            before, _ = row_of(conn)
        checked = ingest.check_upload(ctx, before["doc"], upload, data)
    try:
        with catalog.db(ctx.platform).begin() as conn:
            row, index = row_of(conn)
            doc = dict(row["doc"])
            resources = list(doc.get("resources", []))
            old = resources[index] if index is not None else None
            given = {k: v for k, v in data.items() if k not in ("upload", "clear_upload")}
            merged = {**old, **given} if (patch and old) else given
            problems = catalog.Problems()
            name = catalog.stored_file_name(upload.filename) if upload else None
            res = catalog.validate_resource(merged, old, doc["id"], problems, upload_name=name)
            problems.raise_if_any()
            if upload is not None:
                staged = files.stage(settings, upload, res["id"])
                res.update(size=staged.size, hash=f"sha256:{staged.sha256}", last_modified=catalog.now(),
                           mimetype=given.get("mimetype") or staged.mimetype, **checked)
                if ingest.wants_load(res):
                    res["datastore_status"] = "pending"
                    ingest.enqueue_load(ctx, conn, res)
            if index is None:
                resources.append(res)
            else:
                resources[index] = res
            doc.update(resources=resources, num_resources=len(resources), metadata_modified=catalog.now())
            org = catalog.find_group(conn, row["owner_org"], is_organization=True, active_only=False) or {}
            catalog.save_package(conn, doc, org, row["seq"])
            package = _show(conn, ctx, doc)
    except BaseException:
        if staged is not None:
            files.discard(staged)
        raise
    if staged is not None:
        files.publish(settings, staged, res["id"])
    elif old is not None and old.get("url_type") == "upload" and res.get("url_type") != "upload":
        files.remove(settings, old["id"])
    shown = next(r for r in package["resources"] if r["id"] == res["id"])
    return shown


@action("resource_create", write=True)
def resource_create(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """Add a resource to dataset ``package_id``: a link (``url``) or a file (multipart ``upload``), with
    ``name``, ``description``, ``format`` (guessed from the file name when absent) …"""
    pid = require(data, "package_id")
    return _write_resource(ctx, data, lambda conn: (_editable_package(conn, ctx, pid), None), patch=False)


@action("resource_update", write=True)
def resource_update(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """Replace a resource (``id``); a new ``upload`` replaces its file."""
    rid = require(data, "id")
    return _write_resource(ctx, data, lambda conn: _resource_row(conn, ctx, rid, edit=True), patch=False)


@action("resource_patch", write=True)
def resource_patch(ctx: ActionContext, data: dict[str, Any]) -> dict[str, Any]:
    """Change the given fields of a resource (``id``), e.g. ``datastore_active``."""
    rid = require(data, "id")
    return _write_resource(ctx, data, lambda conn: _resource_row(conn, ctx, rid, edit=True), patch=True)


@action("resource_delete", write=True)
def resource_delete(ctx: ActionContext, data: dict[str, Any]) -> None:
    """Remove a resource (``id``) and its uploaded file."""
    rid = require(data, "id")
    with catalog.db(ctx.platform).begin() as conn:
        row, _ = _resource_row(conn, ctx, rid, edit=True)
        doc = dict(row["doc"])
        resources = [r for r in doc["resources"] if r["id"] != rid]
        doc.update(resources=resources, num_resources=len(resources), metadata_modified=catalog.now())
        org = catalog.find_group(conn, row["owner_org"], is_organization=True, active_only=False) or {}
        catalog.save_package(conn, doc, org, row["seq"])
        datastore.forget_resource(conn, rid)
    files.remove(ctx.platform.settings, rid)


def resource_file(ctx: ActionContext, package_ref: str, resource_id: str) -> tuple[dict[str, Any], Path]:
    """An uploaded resource the caller may read, and where its file is (for the download route)."""
    with catalog.db(ctx.platform).connect() as conn:
        row, index = _resource_row(conn, ctx, resource_id, edit=False)
    if package_ref not in (row["id"], row["name"]):
        raise NotFoundError("Resource was not found. (リソースが見つかりません)")
    res = row["doc"]["resources"][index]
    if res.get("url_type") != "upload":
        raise NotFoundError("This resource is a link, not an uploaded file")
    return res, files.resource_path(ctx.platform.settings, resource_id)
