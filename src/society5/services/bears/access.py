"""Who may do what in the bears service, and the views each kind of caller gets of a sighting.

Staff (an operator of the tenant, or an admin) see and change everything of their tenant; readers see it;
devices (cameras) may post images. Anyone, without an account, may report and sees the public view: no
rejected or merged-away sightings, locations rounded to BEARS_PUBLIC_DECIMALS, a photo only once staff have
verified the sighting, nothing of the reporter.
"""

from __future__ import annotations

from typing import Any

from fastapi import Header, Request

from society5.core.auth import DEFAULT_TENANT, Principal, validate_tenant_name
from society5.core.errors import BadRequest, Forbidden, Unauthorized
from society5.core.http import platform_of, principal_of

TenantHeader = Header(default=None, alias="NGSILD-Tenant",
                      description="tenant: the municipality's 団体コード (default tenant when absent)")
PUBLIC_FIELDS = ("id", "observed_at", "municipality", "municipality_name", "area_name", "kind", "trace",
                 "count", "cubs", "behaviour", "direction", "source", "state", "alert_level", "report_count")


def tenant_name(value: str | None) -> str:
    try:
        return validate_tenant_name(value) if value is not None else DEFAULT_TENANT
    except BadRequest as err:
        raise BadRequest(f"NGSILD-Tenant: {err.detail}") from None


def staff(request: Request, tenant: str, *, write: bool = True) -> Principal:
    """The caller, if staff of ``tenant`` (operators write; readers only read); else 401/403."""
    who = principal_of(request)
    if who.anonymous:
        raise Unauthorized("this needs a staff login or an operator key: send 'Authorization: Bearer <key>' "
                           "/ 職員としてログインしてください")
    if who.is_admin:
        return who
    allowed = ("operator",) if write else ("operator", "reader")
    if who.role not in allowed:
        raise Forbidden(f"role {who.role!r} may not {'change' if write else 'read'} bear sightings")
    if who.tenant != tenant:
        raise Forbidden(f"this key belongs to tenant {who.tenant!r}, not {tenant!r}")
    return who


def device_or_staff(request: Request, tenant: str) -> Principal:
    """Cameras post with a device key of their tenant; staff may post too."""
    who = principal_of(request)
    if who.role == "device":
        if who.tenant != tenant:
            raise Forbidden(f"this device key belongs to tenant {who.tenant!r}, not {tenant!r}")
        return who
    return staff(request, tenant)


def is_staff_of(request: Request, tenant: str) -> bool:
    who = principal_of(request)
    return who.is_admin or (who.role in ("operator", "reader") and who.tenant == tenant)


def public_view(sighting: dict[str, Any], decimals: int) -> dict[str, Any] | None:
    """What the public may see of a sighting, or None when it must not be shown at all."""
    if sighting.get("state") == "rejected" or sighting.get("merged_into"):
        return None
    out = {k: sighting[k] for k in PUBLIC_FIELDS if k in sighting}
    if "lat" in sighting:
        out["lat"] = round(sighting["lat"], decimals)
        out["lon"] = round(sighting["lon"], decimals)
    if sighting.get("state") == "verified" and sighting.get("photo"):
        out["photo"] = sighting["photo"]
    return out


def settings_of(request: Request) -> Any:
    return platform_of(request).settings
