"""The bears service's pages (Japanese first, ``?lang=en``): the public sighting map ``/bears/``, the resident
report form ``/bears/report``, alert sign-up ``/bears/subscribe`` and the staff console ``/bears/console``.

The pages stand alone (a service may not import the web shell) but share its stylesheet, markup and language
cookie, and its Leaflet (``/static/vendor/leaflet``, mounted here too from ``xstatic-leaflet``); GSI tiles
are the base map. Scripts are files under ``/bears-static`` (the CSP allows no inline code); data reaches them
as data attributes and JSON script elements. The public map reads ``/bears/sightings.geojson``; forms post to
the HTTP API with ``fetch``, and the report form also works without scripts (it posts to this page, which
files the report through the same code as ``POST /bears/reports``).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2
import sqlalchemy as sa
import xstatic.pkg.leaflet as leaflet_pkg
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from society5.core.auth import ANONYMOUS, DEFAULT_TENANT, Principal
from society5.core.errors import ApiError
from society5.core.http import platform_of, principal_of
from society5.core.pagekit import GSI_ATTRIBUTION, GSI_TILES, security_headers
from society5.core.timeutil import JST, iso, to_jst
from society5.services.bears import access, api, models, reports, tables
from society5.services.bears.page_texts import LEVEL, TEXTS, js_texts
from society5.services.bears.sightings import sightings_of

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
LANGS = ("ja", "en")
LANG_COOKIE = "s5_lang"  # the web shell's language cookie: the choice carries across all pages
HOKKAIDO = {"lat": 43.06, "lon": 141.35, "zoom": 7}
PERIODS = (7, 30, 90)
STRONG_DAYS = 7  # the issue: the last 7 days strong, older ones fading
LIST_ROWS = 100
CONSOLE_ROWS = 50
SECURITY_HEADERS = security_headers(extra_img_src="blob:", no_store=True)

router = APIRouter(include_in_schema=False)
# A mount matches by prefix; the web shell's identical Leaflet mount wins when the shell is in the app.
router.mount("/static/vendor/leaflet", StaticFiles(directory=leaflet_pkg.BASE_DIR), name="bears-leaflet")
router.mount("/bears-static", StaticFiles(directory=HERE / "page_static"), name="bears-static")

_env = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "page_templates"), autoescape=True,
                          undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


# -- shell ---------------------------------------------------------------------------------------------------


def _lang(request: Request) -> str:
    for value in (request.query_params.get("lang"), request.cookies.get(LANG_COOKIE)):
        if value in LANGS:
            return value
    return "ja"


def _principal(request: Request) -> Principal:
    try:
        return principal_of(request)
    except ApiError:  # a stale or bad credential: the public pages still render
        return ANONYMOUS


def _url(request: Request, **changes: Any) -> str:
    items = [(k, v) for k, v in request.query_params.multi_items() if k not in changes]
    items += [(k, str(v)) for k, v in changes.items() if v not in (None, "")]
    return request.url.path + ("?" + urlencode(items) if items else "")


def _shell(request: Request, active: str) -> dict[str, Any]:
    lang = _lang(request)
    who = _principal(request)
    plat = platform_of(request)
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return {
        "lang": lang, "t": TEXTS[lang], "active": active, "js_texts": js_texts(lang),
        "user": None if who.anonymous or plat.settings.auth == "off" else {
            "name": who.name or who.role, "role": who.role, "tenant": who.tenant},
        "auth_off": plat.settings.auth == "off",
        "lang_urls": {code: _url(request, lang=code) for code in LANGS},
        "login_url": "/login?" + urlencode({"next": here}),
        "map": {"tiles": GSI_TILES, "attribution": GSI_ATTRIBUTION, **HOKKAIDO},
    }


def _render(request: Request, template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    response = HTMLResponse(_env.get_template(template).render(context), status_code=status)
    response.headers.update(SECURITY_HEADERS)
    chosen = request.query_params.get("lang")
    if chosen in LANGS and request.cookies.get(LANG_COOKIE) != chosen:
        response.set_cookie(LANG_COOKIE, chosen, max_age=365 * 24 * 3600, path="/", samesite="lax")
    return response


def _jst(value: Any) -> str:
    try:
        return to_jst(value) if isinstance(value, str) and value else ""
    except ValueError:
        return str(value)


def _tenant_names(plat: Any) -> dict[str, str]:
    return {str(t["code"]): str(t.get("name") or t["code"]) for t in plat.tenants.list()}


# -- the public map ------------------------------------------------------------------------------------------


def _row(s: dict[str, Any], lang: str, now: datetime) -> dict[str, Any]:
    """A sighting as the list under the map shows it (labels in the page language, time in JST)."""
    t = TEXTS[lang]
    observed = models.observed_time(s)
    return {
        "description": None, "photo": None, "confidence": None, "count": 1, "cubs": 0, **s,
        "when": _jst(s["observed_at"]), "recent": now - observed <= timedelta(days=STRONG_DAYS),
        "kind_label": t["kind_" + s.get("kind", "sighting")], "state_label": t["state_" + s["state"]],
        "source_label": t["source_" + s.get("source", "resident")],
        "behaviour_label": t["behaviour_" + s.get("behaviour", "unknown")],
        "place": " ".join(x for x in (s.get("municipality_name"), s.get("area_name")) if x),
    }


def active_alerts(plat: Any, tenants: list[str] | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """Alerts not expired and not cancelled (rows of ``bears_alerts``), highest level and newest first."""
    t = tables.alerts
    query = sa.select(t).where(t.c.cancelled_at.is_(None), t.c.expires_at > iso(datetime.now(UTC)))
    if tenants is not None:
        query = query.where(t.c.tenant.in_(tenants))
    with plat.engine.connect() as conn:
        rows = conn.execute(query.order_by(t.c.level.desc(), t.c.issued_at.desc()).limit(limit)).mappings()
        return [dict(r) for r in rows]


def _alert_view(row: dict[str, Any], lang: str) -> dict[str, Any]:
    info = row.get("info") or {}
    level = max(1, min(3, int(row["level"])))
    # info holds the CAP texts the alerts part wrote (headline_ja/_en, place, place_en …)
    headline = info.get(f"headline_{lang}") or info.get("headline_ja") or ""
    place = info.get("place_en") if lang == "en" else None
    return {"level": level, "level_label": LEVEL[lang][level], "headline": headline,
            "area": place or info.get("place") or "",
            "issued": _jst(row["issued_at"]), "expires": _jst(row["expires_at"]),
            "focus": "/bears/?" + urlencode({"focus": row["sighting_id"], "days": 30})}


@router.get("/bears", response_class=HTMLResponse)
@router.get("/bears/", response_class=HTMLResponse)
def map_page(request: Request) -> HTMLResponse:
    shell = _shell(request, "map")
    lang, t = shell["lang"], shell["t"]
    plat = platform_of(request)
    try:
        days = int(request.query_params.get("days") or 30)
    except ValueError:
        days = 30
    days = days if days in PERIODS else 30
    kind = request.query_params.get("kind") or ""
    kind = kind if kind in models.KINDS else ""
    focus = (request.query_params.get("focus") or "")[:200]
    items = api.public_sightings(plat, api.public_tenants(plat, None), days, [kind] if kind else None)
    now = datetime.now(UTC)
    geojson = "/bears/sightings.geojson?" + urlencode({"days": days, **({"kind": kind} if kind else {})})
    context = {
        **shell, "days": days, "kind": kind, "periods": PERIODS, "kinds": models.KINDS, "focus": focus,
        "rows": [_row(s, lang, now) for s in items[:LIST_ROWS]], "total": len(items),
        "alerts": [_alert_view(a, lang) for a in active_alerts(plat)],
        "geojson": geojson, "strong_days": STRONG_DAYS, "title": t["map_title"],
    }
    return _render(request, "bears_map.html", context)


# -- the resident report form --------------------------------------------------------------------------------


def _report_context(request: Request, values: dict[str, Any]) -> dict[str, Any]:
    shell = _shell(request, "report")
    now_local = datetime.now(JST).strftime("%Y-%m-%dT%H:%M")
    return {**shell, "title": shell["t"]["report_title"], "values": values, "now_local": now_local,
            "kinds": models.KINDS, "traces": models.TRACES, "behaviours": models.BEHAVIOURS,
            "directions": models.DIRECTIONS, "error": None, "done": None}


@router.get("/bears/report", response_class=HTMLResponse)
def report_page(request: Request) -> HTMLResponse:
    return _render(request, "bears_report.html", _report_context(request, {}))


@router.post("/bears/report", response_class=HTMLResponse)
async def report_submit(request: Request) -> HTMLResponse:
    """The form without scripts: file the report as the API would, then thank or show what to fix."""
    plat = platform_of(request)
    values: dict[str, Any] = {}
    try:
        values, photo = await reports._read_body(request, plat.settings.bears_max_image_mb * 2**20)
        address = request.client.host if request.client else "unknown"
        made = await run_in_threadpool(reports.file_report, plat, values, photo, address)
    except ApiError as err:
        context = _report_context(request, {k: str(v) for k, v in values.items()})
        context["error"] = err.detail
        return _render(request, "bears_report.html", context, err.status)
    context = _report_context(request, {})
    context["done"] = {"id": made["id"], "focus": "/bears/?" + urlencode({"focus": made["id"]})}
    return _render(request, "bears_report.html", context, 201)


# -- alert sign-up -------------------------------------------------------------------------------------------


@router.get("/bears/subscribe", response_class=HTMLResponse)
def subscribe_page(request: Request) -> HTMLResponse:
    shell = _shell(request, "subscribe")
    plat = platform_of(request)
    munis = [{"code": c, "name": n} for c, n in _tenant_names(plat).items() if c != DEFAULT_TENANT]
    return _render(request, "bears_subscribe.html", {
        **shell, "title": shell["t"]["subscribe_title"], "municipalities": munis,
        "radii": (500, 1000, 2000, 5000, 10000)})


# -- the staff console ---------------------------------------------------------------------------------------


def _console_tenant(request: Request, who: Principal, plat: Any) -> str:
    if not who.is_admin:
        return who.tenant or DEFAULT_TENANT
    chosen = request.query_params.get("tenant")
    if chosen:
        return access.tenant_name(chosen)
    codes = [c for c in _tenant_names(plat) if c != DEFAULT_TENANT]
    return codes[0] if codes else DEFAULT_TENANT


def _rows(plat: Any, table: sa.Table, tenant: str, order: Any) -> list[dict[str, Any]]:
    with plat.engine.connect() as conn:
        found = conn.execute(sa.select(table).where(table.c.tenant == tenant).order_by(*order)
                             .limit(CONSOLE_ROWS)).mappings()
        return [dict(r) for r in found]


def _cameras(plat: Any, tenant: str) -> list[dict[str, Any]]:
    broker = plat.parts.get("broker")
    if broker is None:
        return []
    out = []
    for c in broker.find(tenant, type="CameraTrap", fmt="keyValues", limit=500):
        out.append({"id": c["id"], "name": c.get("name") or c["id"].rsplit(":", 1)[-1],
                    "area": c.get("areaName") or "", "status": c.get("status") or "",
                    "last": _jst(c.get("dateLastValueReported")), "label": c.get("lastLabel") or "",
                    "battery": c.get("batteryLevel"), "images": c.get("imageCount")})
    out.sort(key=lambda c: c["name"])
    return out


def console_data(plat: Any, tenant: str, lang: str) -> dict[str, Any]:
    """Everything the console shows of one tenant (and nothing of another)."""
    store = sightings_of(plat)
    now = datetime.now(UTC)
    queue = store.list(tenant, since=now - timedelta(days=30), states=["unverified"], limit=CONSOLE_ROWS)
    proposals = []
    for group in store.proposals(tenant):
        group.sort(key=lambda s: (s["state"] != "verified", s["observed_at"]))  # keep a verified one
        proposals.append({"primary": _row(group[0], lang, now),
                          "others": [_row(s, lang, now) for s in group[1:]],
                          "other_ids": ",".join(s["id"] for s in group[1:])})
    alerts = _rows(plat, tables.alerts, tenant, [tables.alerts.c.issued_at.desc()])
    dispatches = _rows(plat, tables.dispatches, tenant, [
        sa.case((tables.dispatches.c.status.in_(("open", "assigned")), 0), else_=1),
        tables.dispatches.c.created_at.desc()])
    return {
        "queue": [_row(s, lang, now) for s in queue], "proposals": proposals,
        "cameras": _cameras(plat, tenant),
        "alert_log": [{**_alert_view(a, lang), "recipients": a["recipients"], "sighting_id": a["sighting_id"],
                       "cancelled": _jst(a["cancelled_at"]),
                       "active": not a["cancelled_at"] and a["expires_at"] > iso(now)} for a in alerts],
        "dispatches": [{**d, "observed": _jst(d["observed_at"]), "updated": _jst(d["updated_at"])}
                       for d in dispatches],
    }


@router.get("/bears/console", response_class=HTMLResponse)
def console_page(request: Request) -> Response:
    shell = _shell(request, "console")
    t = shell["t"]
    plat = platform_of(request)
    who = _principal(request)
    if who.anonymous:
        return RedirectResponse(shell["login_url"], status_code=303)
    try:
        tenant = _console_tenant(request, who, plat)
        access.staff(request, tenant, write=False)
    except ApiError as err:
        return _render(request, "bears_error.html", {**shell, "title": t["console_title"],
                                                      "message": f"{t['console_denied']} ({err.detail})"},
                       err.status)
    names = _tenant_names(plat)
    context = {
        **shell, **console_data(plat, tenant, shell["lang"]), "title": t["console_title"], "tenant": tenant,
        "tenant_name": names.get(tenant, tenant), "can_write": who.is_admin or who.role == "operator",
        "tenants": [{"code": c, "name": n} for c, n in names.items()] if who.is_admin else [],
    }
    return _render(request, "bears_console.html", context)
