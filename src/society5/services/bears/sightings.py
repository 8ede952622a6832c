"""Sightings: create (staff, police, residents, cameras), list, verify or reject, record the response, merge.

A sighting is a ``BearSighting`` entity in the tenant's broker space, written through the broker's Python API;
the reporter's private data (a salted client hash for rate limits, an optional contact) stays in
``bears_reports``. Other parts of the service react to changes through :data:`listeners` (alerts on a
verified sighting or a confident camera detection), so this module knows nothing of them.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from society5.core.errors import BadRequest, Conflict, NotFound, TooManyRequests
from society5.core.timeutil import iso, now_iso, parse_iso
from society5.services.bears import geo, models, tables
from society5.services.bears.models import SightingIn

log = logging.getLogger(__name__)
ModelT = TypeVar("ModelT", bound=BaseModel)

# Called as listener(platform, tenant, sighting, event) after a change is stored; event is one of
# "created", "verified", "rejected", "updated", "merged". A failing listener is logged; the write stands.
Listener = Callable[[Any, str, dict[str, Any], str], None]
listeners: list[Listener] = []


class SightingPatch(BaseModel):
    """What staff may change after a report: the facts as verified, and the response taken."""

    model_config = ConfigDict(extra="forbid")
    kind: models.Kind | None = None
    trace: models.Trace | None = None
    count: int | None = Field(default=None, ge=0, le=50)
    cubs: int | None = Field(default=None, ge=0, le=20)
    behaviour: models.Behaviour | None = None
    direction: models.Direction | None = None
    area_name: str | None = Field(default=None, max_length=200)
    distance_homes_m: float | None = Field(default=None, ge=0, le=100_000)
    distance_school_m: float | None = Field(default=None, ge=0, le=100_000)
    description: str | None = Field(default=None, max_length=2000)
    response: str | None = Field(default=None, max_length=2000, description="response taken (対応内容)")


PATCH_ATTRS = {"kind": "sightingKind", "trace": "traceKind", "count": "bearCount", "cubs": "cubCount",
               "behaviour": "behaviour", "direction": "direction", "area_name": "areaName",
               "distance_homes_m": "distanceToHomes", "distance_school_m": "distanceToSchool",
               "description": "description", "response": "responseTaken"}


def client_key(address: str, salt: str) -> str:
    """A salted hash of a client's address: enough to count its reports, useless to identify it."""
    return hashlib.sha256(f"{salt}:{address}".encode()).hexdigest()[:32]


def validation_message(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


def parse_model(model: type[ModelT], data: ModelT | Any) -> ModelT:
    """``data`` as ``model``, or BadRequest naming the first field that is wrong."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise BadRequest(validation_message(err)) from None


class Sightings:
    def __init__(self, platform: Any) -> None:
        self.platform = platform
        self.settings = platform.settings

    @property
    def broker(self) -> Any:
        broker = self.platform.parts.get("broker")
        if broker is None:
            raise RuntimeError("the bears service needs the broker service started on the platform")
        return broker

    # -- writes --------------------------------------------------------------------------------------------
    def create(self, tenant: str, data: SightingIn | dict[str, Any], *, client: str | None = None,
               contact: str | None = None, state: str = "unverified") -> dict[str, Any]:
        """Store a new sighting; a resident's (``client`` given) counts against the hourly report limit."""
        s = self.parse(data)
        try:
            geo.check_location(s.lat, s.lon)
        except geo.OutsideHokkaido as err:
            raise BadRequest(f"lat/lon: {err}") from None
        if client is not None:
            self.check_rate(client)
        muni = geo.nearest_municipality(s.lat, s.lon)
        key = uuid.uuid4().hex[:16]
        ent = models.to_entity(tenant, key, s, municipality=muni.code, municipality_name=muni.name,
                               state=state)
        self.broker.upsert(tenant, [ent], mode="replace")
        if client is not None:
            with self.platform.engine.begin() as conn:
                conn.execute(tables.reports.insert().values(
                    sighting_id=ent["id"], tenant=tenant, client=client, contact=contact,
                    created_at=now_iso()))
        flat = models.from_entity(ent)
        self._tell(tenant, flat, "created")
        if state == "verified":  # recorded by staff or police: verified by its author
            self._tell(tenant, flat, "verified")
        return flat

    def parse(self, data: SightingIn | dict[str, Any]) -> SightingIn:
        return parse_model(SightingIn, data)

    def check_rate(self, client: str) -> None:
        since = iso(datetime.now(UTC) - timedelta(hours=1))
        with self.platform.engine.connect() as conn:
            n = conn.execute(sa.select(sa.func.count()).select_from(tables.reports).where(
                tables.reports.c.client == client, tables.reports.c.created_at >= since)).scalar_one()
        if n >= self.settings.bears_report_limit:
            raise TooManyRequests(
                f"more than {self.settings.bears_report_limit} reports in an hour from this device; please "
                "call the municipality or 110 if it is urgent / 1時間あたりの通報数の上限に達しました。"
                "緊急の場合は役場または110番へ電話してください")

    def set_state(self, tenant: str, sighting_id: str, state: str, who: str,
                  note: str | None = None) -> dict[str, Any]:
        if state not in ("verified", "rejected"):
            raise BadRequest(f"state: must be 'verified' or 'rejected', not {state!r}")
        current = self.get(tenant, sighting_id)
        if current["state"] == state:
            return current
        update: dict[str, Any] = {
            "id": sighting_id, "type": models.ENTITY_TYPE,
            "verificationStatus": {"type": "Property", "value": state},
            "verifiedBy": {"type": "Property", "value": who[:200] or "staff"},
            "dateVerified": {"type": "Property", "value": now_iso()},
        }
        if note:
            update["verificationNote"] = {"type": "Property", "value": note[:2000]}
        self.broker.upsert(tenant, [update], mode="update")
        flat = self.get(tenant, sighting_id)
        self._tell(tenant, flat, state)
        return flat

    def update(self, tenant: str, sighting_id: str, patch: SightingPatch | dict[str, Any]) -> dict[str, Any]:
        p = parse_model(SightingPatch, patch)
        current = self.get(tenant, sighting_id)
        changes = p.model_dump(exclude_unset=True, exclude_none=True)
        if not changes:
            return current
        count = changes.get("count", current.get("count", 1))
        if changes.get("cubs", current.get("cubs", 0)) > count:
            raise BadRequest("cubs: cannot be more than count / 頭数より多くできません")
        update: dict[str, Any] = {"id": sighting_id, "type": models.ENTITY_TYPE}
        for name, value in changes.items():
            update[PATCH_ATTRS[name]] = {"type": "Property", "value": value}
        self.broker.upsert(tenant, [update], mode="update")
        flat = self.get(tenant, sighting_id)
        self._tell(tenant, flat, "updated")
        return flat

    def set_attrs(self, tenant: str, sighting_id: str, attrs: dict[str, Any]) -> None:
        """Write service-owned attributes (``alertLevel``, ``photo`` …) without telling listeners."""
        update: dict[str, Any] = {"id": sighting_id, "type": models.ENTITY_TYPE}
        for name, value in attrs.items():
            update[name] = value if isinstance(value, dict) else {"type": "Property", "value": value}
        self.broker.upsert(tenant, [update], mode="update")

    def merge(self, tenant: str, primary_id: str, other_ids: list[str], who: str) -> dict[str, Any]:
        """Make ``other_ids`` part of ``primary_id``'s event; originals are kept, marked ``mergedInto``."""
        others = [i for i in dict.fromkeys(other_ids) if i != primary_id]
        if not others:
            raise BadRequest("others: name at least one sighting other than the primary")
        primary = self.get(tenant, primary_id)
        if primary.get("merged_into"):
            raise Conflict(f"{primary_id} is itself merged into {primary['merged_into']}")
        found = [self.get(tenant, i) for i in others]  # NotFound before anything is written
        updates: list[dict[str, Any]] = [
            {"id": o["id"], "type": models.ENTITY_TYPE,
             "mergedInto": {"type": "Relationship", "object": primary_id}} for o in found]
        reports = int(primary.get("report_count") or 1) + sum(int(o.get("report_count") or 1) for o in found)
        updates.append({
            "id": primary_id, "type": models.ENTITY_TYPE,
            "reportCount": {"type": "Property", "value": reports},
            "bearCount": {"type": "Property",
                          "value": max([primary.get("count", 1), *(o.get("count", 1) for o in found)])},
            "mergedBy": {"type": "Property", "value": who[:200] or "staff"},
        })
        for o in found:  # sightings merged into one of the others follow them into the primary
            for child in self.list(tenant, merged_into=o["id"]):
                updates.append({"id": child["id"], "type": models.ENTITY_TYPE,
                                "mergedInto": {"type": "Relationship", "object": primary_id}})
        self.broker.upsert(tenant, updates, mode="update")
        flat = self.get(tenant, primary_id)
        self._tell(tenant, flat, "merged")
        return flat

    def _tell(self, tenant: str, flat: dict[str, Any], event: str) -> None:
        for listener in listeners:
            try:
                listener(self.platform, tenant, flat, event)
            except Exception:  # the sighting is stored; a listener's failure is its own to retry
                log.exception("bears listener %r failed on %s of %s", listener, event, flat["id"])

    # -- reads ---------------------------------------------------------------------------------------------
    def get(self, tenant: str, sighting_id: str) -> dict[str, Any]:
        if not sighting_id.startswith(f"urn:ngsi-ld:{models.ENTITY_TYPE}:"):
            raise NotFound(f"no sighting {sighting_id!r} / 該当する出没情報がありません")
        try:
            ent = self.broker.get(tenant, sighting_id, fmt="keyValues")
        except NotFound:
            raise NotFound(f"no sighting {sighting_id!r} / 該当する出没情報がありません") from None
        return models.from_entity(ent)

    def list(self, tenant: str, *, since: datetime | None = None, until: datetime | None = None,
             kinds: list[str] | None = None, states: list[str] | None = None, merged: bool = False,
             merged_into: str | None = None, limit: int = 2000) -> list[dict[str, Any]]:
        """Sightings newest first. Merged originals are left out unless ``merged`` (or asked by parent)."""
        q: list[str] = []
        if since is not None:
            q.append(f"dateObserved>={iso(since)}")
        if until is not None:
            q.append(f"dateObserved<{iso(until)}")
        if kinds:
            q.append("sightingKind==" + ",".join(f'"{k}"' for k in kinds))
        if states:
            q.append("verificationStatus==" + ",".join(f'"{s}"' for s in states))
        if merged_into:
            q.append(f'mergedInto=="{merged_into}"')
        elif not merged:
            q.append("!mergedInto")
        ents = self.broker.find(tenant, type=models.ENTITY_TYPE, q=";".join(q) or None, fmt="keyValues",
                                limit=limit)
        out = [models.from_entity(e) for e in ents]
        out.sort(key=lambda s: s.get("observed_at", ""), reverse=True)
        return out

    def proposals(self, tenant: str, days: float = 3.0) -> list[list[dict[str, Any]]]:
        """Groups of unmerged, unrejected sightings close in time and space: candidates for one event.

        Single linkage: two sightings are linked when both the distance (BEARS_MERGE_M) and the time apart
        (BEARS_MERGE_MINUTES) are within the settings; a group is a connected set of two or more."""
        items = self.list(tenant, since=datetime.now(UTC) - timedelta(days=days),
                          states=["unverified", "verified"])
        items = [s for s in items if "lat" in s]
        items.sort(key=lambda s: s["observed_at"])
        parent = list(range(len(items)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        window = timedelta(minutes=self.settings.bears_merge_minutes)
        times = [parse_iso(s["observed_at"]) for s in items]
        for i, a in enumerate(items):
            for j in range(i + 1, len(items)):
                if times[j] - times[i] > window:
                    break
                b = items[j]
                if geo.haversine_m(a["lat"], a["lon"], b["lat"], b["lon"]) <= self.settings.bears_merge_m:
                    parent[root(j)] = root(i)
        groups: dict[int, list[dict[str, Any]]] = {}
        for i, s in enumerate(items):
            groups.setdefault(root(i), []).append(s)
        return [g for g in groups.values() if len(g) > 1]


def sightings_of(platform: Any) -> Sightings:
    found = platform.parts.get("bears.sightings")
    if found is None:
        found = platform.parts["bears.sightings"] = Sightings(platform)
    return found
