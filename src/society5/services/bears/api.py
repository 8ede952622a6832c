"""HTTP API of sightings at ``/bears``: staff create, verify, correct and merge; the public reads a
rounded view.

Errors use the platform's non-broker shape ``{"error": {"code", "title", "detail", "status"}}``; the detail
names the field first (``lat/lon: … is in the sea``) and says it in Japanese too.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from society5.core.errors import BadRequest, NotFound
from society5.core.http import platform_of, principal_of
from society5.services.bears import access, models
from society5.services.bears.models import SightingIn
from society5.services.bears.sightings import SightingPatch, listeners, sightings_of

router = APIRouter(tags=["bears"])
KindQ = Query(None, description="only these kinds (sighting, trace, damage, injury), comma-separated")


class VerifyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: Literal["verified", "rejected"] = Field(description="verified 確認済 or rejected 却下")
    note: str | None = Field(default=None, max_length=2000, description="why (kept with the sighting)")


class MergeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    others: list[str] = Field(min_length=1, max_length=100,
                              description="sighting ids that are the same event")


def _kinds(value: str | None) -> list[str] | None:
    if not value:
        return None
    kinds = [k.strip() for k in value.split(",") if k.strip()]
    bad = [k for k in kinds if k not in models.KINDS]
    if bad:
        raise BadRequest(f"kind: unknown {bad[0]!r}; one of {', '.join(models.KINDS)}")
    return kinds


def _since(days: float) -> datetime:
    return datetime.now(UTC) - timedelta(days=days)


def feature(s: dict[str, Any]) -> dict[str, Any]:
    props = {k: v for k, v in s.items() if k not in ("lat", "lon")}
    return {"type": "Feature", "id": s["id"], "properties": props,
            "geometry": {"type": "Point", "coordinates": [s["lon"], s["lat"]]} if "lat" in s else None}


PUBLIC_CACHE_SECONDS = 15.0  # the public map asks every tenant (one broker query each) on every load
PUBLIC_CACHE_KEYS = 256


def _public_cache(platform: Any) -> dict[Any, tuple[float, Any]]:
    cache: dict[Any, tuple[float, Any]] | None = platform.parts.get("bears.public_cache")
    if cache is None:
        cache = platform.parts["bears.public_cache"] = {}
    return cache


def _cached(platform: Any, key: Any, make: Any) -> Any:
    """``make()`` at most once per PUBLIC_CACHE_SECONDS per key; a change to any sighting forgets it all."""
    cache = _public_cache(platform)
    now = time.monotonic()
    hit = cache.get(key)
    if hit is not None and hit[0] > now:
        return hit[1]
    value = make()
    if len(cache) >= PUBLIC_CACHE_KEYS:
        cache.clear()
    cache[key] = (now + PUBLIC_CACHE_SECONDS, value)
    return value


def forget_public(platform: Any, tenant: str = "", sighting: Any = None, event: str = "") -> None:
    """Listener: a new or changed sighting shows on the public map at once (in this process; others
    within PUBLIC_CACHE_SECONDS)."""
    _public_cache(platform).clear()


listeners.append(forget_public)


def public_sightings(platform: Any, tenants: list[str], days: float,
                     kinds: list[str] | None) -> list[dict[str, Any]]:
    key = ("sightings", tuple(tenants), float(days), tuple(kinds or ()))
    return list(_cached(platform, key, lambda: _public_sightings(platform, tenants, days, kinds)))


def _public_sightings(platform: Any, tenants: list[str], days: float,
                      kinds: list[str] | None) -> list[dict[str, Any]]:
    store = sightings_of(platform)
    decimals = platform.settings.bears_public_decimals
    out: list[dict[str, Any]] = []
    for tenant in tenants:
        for s in store.list(tenant, since=_since(days), kinds=kinds, states=["unverified", "verified"]):
            view = access.public_view(s, decimals)
            if view is not None:
                out.append(view)
    out.sort(key=lambda s: s["observed_at"], reverse=True)
    return out


def public_tenants(platform: Any, tenant: str | None) -> list[str]:
    if tenant:
        return [access.tenant_name(tenant)]
    return list(_cached(platform, "tenants", lambda: [
        str(t["code"]) for t in platform.tenants.list() if t["code"] != "default"] or ["default"]))


@router.get("/sightings", summary="Sightings of the tenant (staff: all fields; others: the public view)")
def list_sightings(request: Request, days: float = Query(7, gt=0, le=366, description="this many days back"),
                   kind: str | None = KindQ,
                   state: Literal["unverified", "verified", "rejected"] | None = Query(None),
                   merged: bool = Query(False, description="include sightings merged into another (staff)"),
                   tenant: str | None = access.TenantHeader) -> list[dict[str, Any]]:
    name = access.tenant_name(tenant)
    platform = platform_of(request)
    kinds = _kinds(kind)
    if access.is_staff_of(request, name):
        return sightings_of(platform).list(name, since=_since(days), kinds=kinds,
                                           states=[state] if state else None, merged=merged)
    if state == "rejected":
        return []
    out = public_sightings(platform, [name], days, kinds)
    return [s for s in out if state is None or s["state"] == state]


@router.get("/sightings.geojson", summary="Public sightings as GeoJSON (all municipalities, or one)")
def sightings_geojson(request: Request, days: float = Query(7, gt=0, le=366),
                      kind: str | None = KindQ,
                      municipality: str | None = Query(None, description="only this tenant (団体コード)")
                      ) -> dict[str, Any]:
    platform = platform_of(request)
    items = public_sightings(platform, public_tenants(platform, municipality), days, _kinds(kind))
    return {"type": "FeatureCollection", "features": [feature(s) for s in items]}


@router.post("/sightings", status_code=201, summary="Record a sighting (staff, police through staff)")
def create_sighting(request: Request, body: SightingIn, tenant: str | None = access.TenantHeader
                    ) -> dict[str, Any]:
    name = access.tenant_name(tenant)
    access.staff(request, name)
    state = "verified" if body.source in ("staff", "police") else "unverified"  # verified by its author
    return sightings_of(platform_of(request)).create(name, body, state=state)


@router.get("/sightings/{sighting_id}", summary="One sighting")
def get_sighting(request: Request, sighting_id: str,
                 tenant: str | None = access.TenantHeader) -> dict[str, Any]:
    name = access.tenant_name(tenant)
    platform = platform_of(request)
    s = sightings_of(platform).get(name, sighting_id)
    if access.is_staff_of(request, name):
        return s
    view = access.public_view(s, platform.settings.bears_public_decimals)
    if view is None:
        raise NotFound(f"no sighting {sighting_id!r} / 該当する出没情報がありません")
    return view


@router.patch("/sightings/{sighting_id}", summary="Correct a sighting, record the response taken")
def patch_sighting(request: Request, sighting_id: str, body: SightingPatch,
                   tenant: str | None = access.TenantHeader) -> dict[str, Any]:
    name = access.tenant_name(tenant)
    access.staff(request, name)
    return sightings_of(platform_of(request)).update(name, sighting_id, body)


@router.post("/sightings/{sighting_id}/verify", summary="Verify or reject a sighting")
def verify_sighting(request: Request, sighting_id: str, body: VerifyIn,
                    tenant: str | None = access.TenantHeader) -> dict[str, Any]:
    name = access.tenant_name(tenant)
    who = access.staff(request, name)
    return sightings_of(platform_of(request)).set_state(name, sighting_id, body.state, who.name or who.role,
                                                       body.note)


@router.post("/sightings/{sighting_id}/merge", summary="Merge other reports of the same event into this one")
def merge_sightings(request: Request, sighting_id: str, body: MergeIn,
                    tenant: str | None = access.TenantHeader) -> dict[str, Any]:
    name = access.tenant_name(tenant)
    who = access.staff(request, name)
    return sightings_of(platform_of(request)).merge(name, sighting_id, body.others, who.name or who.role)


@router.get("/proposals", summary="Groups of reports close in time and space, proposed as one event")
def merge_proposals(request: Request, days: float = Query(3, gt=0, le=31),
                    tenant: str | None = access.TenantHeader) -> list[list[dict[str, Any]]]:
    name = access.tenant_name(tenant)
    access.staff(request, name, write=False)
    return sightings_of(platform_of(request)).proposals(name, days)


def caller_name(request: Request) -> str:
    who = principal_of(request)
    return who.name or who.role
