"""Recipients: people (or systems) a tenant's services tell things, with their channels and preferences.

Validation lives here so the Python API and the HTTP API refuse the same input with the same message:
``BadRequest("<field>: what to fix")``.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from society5.core.auth import validate_tenant_name
from society5.core.errors import AlreadyExists, BadRequest, NotFound
from society5.core.timeutil import now_iso
from society5.notify.channels import ADDRESS_CHECKS, NAMES
from society5.notify.quiet import parse_hhmm, zone
from society5.notify.tables import recipients as table
from society5.notify.templates import LANGS

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:\-]{0,127}$")
_TAG = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")
FIELDS = ("id", "name", "language", "channels", "order", "quiet_hours", "webhook_secret", "tags", "active")
DEFAULT_TZ = "Asia/Tokyo"


@dataclass(frozen=True)
class QuietHours:
    start: str  # "22:00", local time in ``timezone``
    end: str
    timezone: str = DEFAULT_TZ


@dataclass(frozen=True)
class Recipient:
    tenant: str
    id: str
    name: str
    channels: Mapping[str, str]  # channel name → address
    language: str = "ja"
    order: tuple[str, ...] = ()  # preferred channels first; the others follow in channels.NAMES order
    quiet_hours: QuietHours | None = None
    webhook_secret: str | None = None
    tags: tuple[str, ...] = ()
    active: bool = True
    created_at: str = ""
    updated_at: str = ""

    def route(self) -> list[str]:
        """The channels to try, in order: the ranked ones, then the others that have an address."""
        ranked = [c for c in self.order if c in self.channels]
        return ranked + [c for c in NAMES if c in self.channels and c not in ranked]

    def public(self) -> dict[str, Any]:
        """The JSON form (the webhook secret is write-only: only whether one is set is shown)."""
        return {
            "id": self.id, "tenant": self.tenant, "name": self.name, "language": self.language,
            "channels": dict(self.channels), "order": self.route(),
            "quiet_hours": None if self.quiet_hours is None else {
                "start": self.quiet_hours.start, "end": self.quiet_hours.end,
                "timezone": self.quiet_hours.timezone},
            "webhook_secret_set": bool(self.webhook_secret), "tags": list(self.tags), "active": self.active,
            "created_at": self.created_at, "updated_at": self.updated_at,
        }


def _bad(fieldname: str, problem: str) -> BadRequest:
    return BadRequest(f"{fieldname}: {problem}")


def _quiet(value: Any) -> QuietHours | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _bad("quiet_hours", 'give {"start": "22:00", "end": "07:00", "timezone": "Asia/Tokyo"} or null')
    unknown = set(value) - {"start", "end", "timezone"}
    if unknown:
        raise _bad("quiet_hours", f"unknown member(s) {', '.join(sorted(unknown))}")
    parsed = {}
    for part in ("start", "end"):
        try:
            parsed[part] = parse_hhmm(value.get(part))  # type: ignore[arg-type]
        except ValueError as err:
            raise _bad(f"quiet_hours.{part}", str(err)) from None
    if parsed["start"] == parsed["end"]:
        raise _bad("quiet_hours", "start and end are equal; give a window or null for no quiet hours")
    tz = value.get("timezone", DEFAULT_TZ)
    try:
        zone(tz)
    except (ValueError, TypeError) as err:
        raise _bad("quiet_hours.timezone", str(err)) from None
    return QuietHours(value["start"], value["end"], tz)


def _channels(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping) or not value:
        raise _bad("channels", 'give at least one address, e.g. {"mail": "taro@example.jp"}; '
                               f"channels are {', '.join(NAMES)}")
    out = {}
    for name, address in value.items():
        if name not in ADDRESS_CHECKS:
            raise _bad(f"channels.{name}", f"unknown channel; use one of {', '.join(NAMES)}")
        if not isinstance(address, str):
            raise _bad(f"channels.{name}", "the address must be a string")
        try:
            out[name] = ADDRESS_CHECKS[name](address.strip())
        except ValueError as err:
            raise _bad(f"channels.{name}", str(err)) from None
    return out


def _string_list(fieldname: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _bad(fieldname, "give a list of strings")
    return tuple(value)


def validate(tenant: str, data: Mapping[str, Any], base: Recipient | None = None) -> Recipient:
    """A Recipient from JSON-like data; with ``base``, ``data`` is a partial update of it."""
    unknown = set(data) - set(FIELDS)
    if unknown:
        names = ", ".join(sorted(unknown))
        raise BadRequest(f"{names}: unknown field(s); the fields are {', '.join(FIELDS)}")
    validate_tenant_name(tenant)
    if base is None:
        rid = data.get("id")
        if not isinstance(rid, str) or not _ID.match(rid):
            raise _bad("id", "give 1 to 128 letters, digits or _.@:- (starting with a letter or digit)")
        base = Recipient(tenant=tenant, id=rid, name="", channels={})
        if "name" not in data:
            raise _bad("name", "is required (the person's display name)")
        if "channels" not in data:
            raise _bad("channels", "is required")
    elif "id" in data and data["id"] != base.id:
        raise _bad("id", "cannot be changed")
    changes: dict[str, Any] = {}
    if "name" in data:
        name = data["name"]
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise _bad("name", "give 1 to 200 characters")
        changes["name"] = name.strip()
    if "language" in data:
        if data["language"] not in LANGS:
            raise _bad("language", f"use {' or '.join(LANGS)}")
        changes["language"] = data["language"]
    if "channels" in data:
        changes["channels"] = _channels(data["channels"])
    if "order" in data:
        order = _string_list("order", data["order"])
        for name in order:
            if name not in ADDRESS_CHECKS:
                raise _bad("order", f"unknown channel {name!r}; use {', '.join(NAMES)}")
        if len(set(order)) != len(order):
            raise _bad("order", "names a channel twice")
        changes["order"] = order
    if "quiet_hours" in data:
        changes["quiet_hours"] = _quiet(data["quiet_hours"])
    if "webhook_secret" in data:
        secret = data["webhook_secret"]
        if secret is not None and (not isinstance(secret, str) or not 16 <= len(secret) <= 256):
            raise _bad("webhook_secret", "give 16 to 256 characters, or null for unsigned webhooks")
        changes["webhook_secret"] = secret
    if "tags" in data:
        tags = _string_list("tags", data["tags"])
        bad = [t for t in tags if not _TAG.match(t)]
        if bad:
            raise _bad("tags", f"{bad[0]!r}: use 1 to 64 letters, digits or _.:-")
        changes["tags"] = tuple(dict.fromkeys(tags))
    if "active" in data:
        if not isinstance(data["active"], bool):
            raise _bad("active", "give true or false")
        changes["active"] = data["active"]
    result = replace(base, **changes)
    missing = [c for c in result.order if c not in result.channels]
    if missing:
        raise _bad("order", f"channel {missing[0]!r} has no address in channels")
    return result


def _row(r: Recipient) -> dict[str, Any]:
    return {
        "tenant": r.tenant, "id": r.id, "name": r.name, "language": r.language, "channels": dict(r.channels),
        "channel_order": list(r.order), "quiet_start": r.quiet_hours.start if r.quiet_hours else None,
        "quiet_end": r.quiet_hours.end if r.quiet_hours else None,
        "timezone": r.quiet_hours.timezone if r.quiet_hours else DEFAULT_TZ,
        "webhook_secret": r.webhook_secret, "tags": list(r.tags), "active": r.active,
        "created_at": r.created_at, "updated_at": r.updated_at,
    }


def _from_row(row: Any) -> Recipient:
    quiet = QuietHours(row.quiet_start, row.quiet_end, row.timezone) if row.quiet_start else None
    return Recipient(
        tenant=row.tenant, id=row.id, name=row.name, language=row.language, channels=dict(row.channels),
        order=tuple(row.channel_order), quiet_hours=quiet, webhook_secret=row.webhook_secret,
        tags=tuple(row.tags), active=bool(row.active), created_at=row.created_at, updated_at=row.updated_at,
    )


class RecipientStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def create(self, tenant: str, data: Mapping[str, Any]) -> Recipient:
        now = now_iso()
        recipient = replace(validate(tenant, data), created_at=now, updated_at=now)
        with self.engine.begin() as conn:
            if self._load(conn, tenant, recipient.id) is not None:
                raise AlreadyExists(f"recipient {recipient.id!r} already exists in tenant {tenant!r}")
            try:
                conn.execute(table.insert().values(**_row(recipient)))
            except sa.exc.IntegrityError as err:  # created concurrently by another request
                raise AlreadyExists(f"recipient {recipient.id!r} was just created in {tenant!r}") from err
        return recipient

    def update(self, tenant: str, rid: str, data: Mapping[str, Any]) -> Recipient:
        with self.engine.begin() as conn:
            base = self._load(conn, tenant, rid)
            if base is None:
                raise NotFound(f"no recipient {rid!r} in tenant {tenant!r}")
            recipient = replace(validate(tenant, data, base), updated_at=now_iso())
            conn.execute(table.update().where(table.c.tenant == tenant, table.c.id == rid)
                         .values(**_row(recipient)))
        return recipient

    def delete(self, tenant: str, rid: str) -> None:
        with self.engine.begin() as conn:
            done = conn.execute(table.delete().where(table.c.tenant == tenant, table.c.id == rid))
        if done.rowcount == 0:
            raise NotFound(f"no recipient {rid!r} in tenant {tenant!r}")

    def get(self, tenant: str, rid: str, conn: Connection | None = None) -> Recipient:
        if conn is not None:
            found = self._load(conn, tenant, rid)
        else:
            with self.engine.connect() as own:
                found = self._load(own, tenant, rid)
        if found is None:
            raise NotFound(f"no recipient {rid!r} in tenant {tenant!r}")
        return found

    def find(self, tenant: str, rid: str, conn: Connection | None = None) -> Recipient | None:
        try:
            return self.get(tenant, rid, conn)
        except NotFound:
            return None

    def find_many(self, tenant: str, rids: builtins.list[str],
                  conn: Connection | None = None) -> dict[str, Recipient]:
        """The recipients of ``tenant`` among ``rids`` (absent ids are left out), by id."""
        if conn is None:
            with self.engine.connect() as own:
                return self.find_many(tenant, rids, own)
        found: dict[str, Recipient] = {}
        for start in range(0, len(rids), 500):  # bound the number of bind parameters per query
            chunk = rids[start:start + 500]
            rows = conn.execute(sa.select(table).where(table.c.tenant == tenant, table.c.id.in_(chunk)))
            found.update((r.id, _from_row(r)) for r in rows)
        return found

    def list(self, tenant: str, tag: str | None = None, active: bool | None = None) -> list[Recipient]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(table).where(table.c.tenant == tenant).order_by(table.c.id))
            found = [_from_row(r) for r in rows]
        # Tags are a JSON list, which SQLite and PostgreSQL query differently; a tenant has few recipients.
        return [r for r in found if (tag is None or tag in r.tags) and (active is None or r.active == active)]

    def ids(self, tenant: str, tag: str) -> builtins.list[str]:
        """The active recipients carrying ``tag`` (e.g. everyone who wants bear alerts)."""
        return [r.id for r in self.list(tenant, tag=tag, active=True)]

    @staticmethod
    def _load(conn: Connection, tenant: str, rid: str) -> Recipient | None:
        row = conn.execute(sa.select(table).where(table.c.tenant == tenant, table.c.id == rid)).first()
        return None if row is None else _from_row(row)
