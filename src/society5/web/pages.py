"""The web shell's pages: top page, entity browser and entity view (with a GSI-tile map), login and logout.

Pages are thin: they read the broker through its Python API with the caller's principal, so a page shows
exactly what the NGSI-LD API would give the same caller (anonymous callers see public entities only).
Bad input is answered with the page again, a message saying what to fix, and a 4xx status; never a 500.

CSRF: the only state-changing forms are login and logout. They post same-site, and the session cookie is
``SameSite=Lax`` and ``HttpOnly``, so another site can neither send a logged-in POST nor read the cookie;
a forged login/logout changes nothing but who is logged in on that browser.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
import xstatic.pkg.leaflet as leaflet_pkg
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from society5.core.auth import ANONYMOUS, DEFAULT_TENANT, Principal
from society5.core.errors import ApiError, ConfigError
from society5.core.http import SESSION_COOKIE, platform_of, principal_of
from society5.core.pagekit import GSI_ATTRIBUTION, GSI_TILES, security_headers
from society5.core.platform import Platform
from society5.core.timeutil import to_jst
from society5.web.i18n import LANG_COOKIE, LANGS, Translator, pick_lang

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
HOKKAIDO_CENTER = (43.06, 141.35)
HOKKAIDO_ZOOM = 7
DEFAULT_LIMIT = 20
MAX_LIMIT = 200
LIMIT_CHOICES = (10, 20, 50, 100, 200)
STATS_CACHE_SECONDS = 30.0
SECURITY_HEADERS = security_headers()

router = APIRouter(include_in_schema=False)
# Leaflet comes from the xstatic-leaflet package (no copy in the repository, no CDN). The more specific
# mount goes first: a mount matches by prefix.
router.mount("/static/vendor/leaflet", StaticFiles(directory=leaflet_pkg.BASE_DIR), name="leaflet")
router.mount("/static", StaticFiles(directory=HERE / "static"), name="web-static")

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)
templates = Jinja2Templates(env=_env)


class PageError(Exception):
    """Stop building a page and show ``message`` with ``status`` instead."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


# -- shell ---------------------------------------------------------------------------------------------------


def _lang(request: Request) -> str:
    return pick_lang(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE))


def _url(request: Request, **changes: Any) -> str:
    """This page's path with some query parameters changed (None removes one); relative, so safe to link."""
    items = [(k, v) for k, v in request.query_params.multi_items() if k not in changes]
    items += [(k, str(v)) for k, v in changes.items() if v is not None and v != ""]
    return request.url.path + ("?" + urlencode(items) if items else "")


def _principal(request: Request) -> tuple[Principal, str | None]:
    """The caller, or anonymous with the reason when its credentials are bad (a page still renders)."""
    try:
        return principal_of(request), None
    except ApiError as err:
        return ANONYMOUS, err.detail


def _shell(request: Request, active: str) -> dict[str, Any]:
    lang = _lang(request)
    t = Translator(lang)
    plat = platform_of(request)
    principal, auth_error = _principal(request)
    auth_off = plat.settings.auth == "off"
    user = None
    if not principal.anonymous and not auth_off:
        user = {"name": principal.name or principal.role, "role": t(f"role_{principal.role}")
                if principal.role in ("admin", "operator", "reader", "device") else principal.role,
                "tenant": principal.tenant}
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return {
        "lang": lang,
        "t": t,
        "active": active,
        "user": user,
        "auth_off": auth_off,
        "auth_error": t("err_auth", detail=auth_error) if auth_error else None,
        "principal": principal,
        "lang_urls": {code: _url(request, lang=code) for code in LANGS},
        "login_url": "/login?" + urlencode({"next": here}) if active != "login" else "/login",
    }


def _render(request: Request, template: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    response = templates.TemplateResponse(request, template, context, status_code=status)
    chosen = request.query_params.get("lang")
    if chosen in LANGS and request.cookies.get(LANG_COOKIE) != chosen:
        response.set_cookie(LANG_COOKIE, chosen, max_age=365 * 24 * 3600, path="/", samesite="lax")
    response.headers.update(SECURITY_HEADERS)
    response.headers["Cache-Control"] = "no-store"
    return response


def _error_page(request: Request, shell: dict[str, Any], message: str, status: int) -> HTMLResponse:
    return _render(request, "error.html", {**shell, "message": message}, status)


def _broker(request: Request) -> Any:
    broker = platform_of(request).parts.get("broker")
    if broker is None:  # an app built without the broker service
        raise PageError("the broker service is not part of this app", status=503)
    return broker


def _tenant_options(plat: Platform, t: Translator) -> list[dict[str, str]]:
    options = [{"code": DEFAULT_TENANT, "label": f"{DEFAULT_TENANT} {t('tenant_default')}"}]
    for row in plat.tenants.list():
        code = str(row["code"])
        if code != DEFAULT_TENANT:
            options.append({"code": code, "label": f"{code} {row.get('name') or ''}".strip()})
    return options


# -- values shown on pages -----------------------------------------------------------------------------------


def _text(value: Any, lang: str) -> str | None:
    """A short display text of a keyValues value (a LanguageProperty picks the page language)."""
    if isinstance(value, dict) and isinstance(value.get("languageMap"), dict):
        lmap = value["languageMap"]
        value = lmap.get(lang) or lmap.get("ja") or next(iter(lmap.values()), None)
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _geometry(value: Any) -> dict[str, Any] | None:
    if isinstance(value, dict) and isinstance(value.get("type"), str) and (
        "coordinates" in value or "geometries" in value
    ):
        return value
    return None


def _type_text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value) if value is not None else ""


def _jst(value: Any) -> str:
    try:
        return to_jst(value) if isinstance(value, str) else ""
    except ValueError:
        return str(value)


def _view_url(entity_id: str, tenant: str) -> str:
    return "/entities/view?" + urlencode({"id": entity_id, "tenant": tenant})


def _feature(kv: dict[str, Any], tenant: str, lang: str) -> dict[str, Any] | None:
    geom = _geometry(kv.get("location"))
    if geom is None:
        return None
    etype = kv.get("type")
    return {"type": "Feature", "geometry": geom,
            "properties": {"id": kv["id"], "type": _type_text(etype),
                           "name": _text(kv.get("name"), lang) or "", "url": _view_url(kv["id"], tenant)}}


def _pretty(value: Any, width: int = 0) -> str:
    """JSON text: on one line when it fits in ``width`` characters, else indented."""
    one = json.dumps(value, ensure_ascii=False, default=str)
    if len(one) <= width:
        return one
    return json.dumps(value, ensure_ascii=False, indent=2, default=str)


# -- pages ---------------------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def top(request: Request) -> Response:
    shell = _shell(request, "top")
    t, lang = shell["t"], shell["lang"]
    cards = []
    for svc in request.app.state.services:
        if not svc.listed:
            continue
        links: list[dict[str, str]] = []
        if svc.name == "broker":
            links = [{"label": t("top_browse_entities"), "href": "/entities"},
                     {"label": t("top_api_docs"), "href": "/docs"}]
        elif svc.pages is not None:
            links = [{"label": t("top_open"), "href": f"/{svc.name}"}]
        description = svc.description
        if lang == "en" and svc.extra.get("description_en"):
            description = svc.extra["description_en"]
        cards.append({"name": svc.name, "title": svc.title, "title_en": svc.title_en,
                      "description": description, "links": links})
    figures = _stats(request, shell["principal"])
    stats = t("stats_line", tenants=figures[0], types=figures[1]) if figures else None
    return _render(request, "top.html", {**shell, "cards": cards, "stats": stats})


def _stats(request: Request, principal: Principal) -> tuple[int, int] | None:
    """(tenants, entity types the caller may see in any tenant), cached for a few seconds per kind of caller.

    The broker answers type counts per tenant, so this asks every tenant (about 1 ms each on SQLite); the
    cache keeps a busy top page from repeating that.
    """
    plat = platform_of(request)
    broker = plat.parts.get("broker")
    if broker is None:
        return None
    cache: dict[tuple[str, str | None], tuple[float, tuple[int, int]]] | None
    cache = getattr(request.app.state, "web_stats_cache", None)
    if cache is None:
        cache = request.app.state.web_stats_cache = {}
    key = (principal.role, principal.tenant)
    hit = cache.get(key)
    now = time.monotonic()
    if hit is not None and now - hit[0] < STATS_CACHE_SECONDS:
        return hit[1]
    tenants = plat.tenants.list()
    types: set[str] = set()
    codes = [DEFAULT_TENANT] + [str(r["code"]) for r in tenants if r["code"] != DEFAULT_TENANT]
    for code in codes:
        try:
            types.update(broker.type_counts(code, principal))
        except ApiError:
            continue
    figures = (len(tenants), len(types))
    if len(cache) > 1000:
        cache.clear()
    cache[key] = (now, figures)
    return figures


def _int_param(raw: str | None, default: int, low: int, high: int, message: str) -> int:
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise PageError(message) from None
    if not low <= value <= high:
        raise PageError(message)
    return value


def _bbox_query(text: str, t: Translator) -> tuple[Any, list[float]]:
    from society5.broker import geo as geo_mod
    from society5.broker.model import LOCATION

    try:
        west, south, east, north = (float(x) for x in text.split(","))
    except ValueError:
        raise PageError(t("err_area", detail=t("err_bbox_format"))) from None
    if not all(math.isfinite(v) for v in (west, south, east, north)) or west >= east or south >= north:
        raise PageError(t("err_area", detail=t("err_bbox_format")))
    ring = [[west, south], [east, south], [east, north], [west, north], [west, south]]
    try:
        gq = geo_mod.parse_geo_query("within", "Polygon", json.dumps([ring]))
    except ValueError as err:
        raise PageError(t("err_area", detail=str(err))) from None
    return dataclasses.replace(gq, geoproperty=LOCATION), [west, south, east, north]


@router.get("/entities", response_class=HTMLResponse)
def entities(request: Request) -> Response:
    from society5.broker.query import q as qlang
    from society5.broker.query.typeexpr import TypeExprError, parse_type_expr
    from society5.broker.store import EntityQuery

    shell = _shell(request, "entities")
    t, lang, principal = shell["t"], shell["lang"], shell["principal"]
    params = request.query_params
    tenant = (params.get("tenant") or "").strip() or principal.tenant or DEFAULT_TENANT
    type_text = (params.get("type") or "").strip()
    q_text = (params.get("q") or "").strip()
    bbox_text = (params.get("bbox") or "").strip()
    form = {"tenant": tenant, "type": type_text, "q": q_text, "bbox": bbox_text,
            "limit": params.get("limit") or str(DEFAULT_LIMIT)}
    context: dict[str, Any] = {
        **shell, "form": form, "errors": [], "types": [], "rows": [], "features": [], "searched": False,
        "tenants": _tenant_options(platform_of(request), t), "limit_choices": LIMIT_CHOICES, "total": 0,
        "pager": None, "bbox": None, "public_only": not principal.can_read_private(tenant),
        "map": _map_config(), "clear_area_url": _url(request, bbox=None, page=None),
    }
    if not any(o["code"] == tenant for o in context["tenants"]):
        context["tenants"].append({"code": tenant, "label": tenant})
    status = 200
    try:
        broker = _broker(request)
        ctx = broker.context()
        try:
            counts = broker.type_counts(tenant, principal)
        except ApiError as err:
            raise PageError(t("err_tenant", detail=err.detail), err.status) from None
        context["types"] = sorted(((ctx.compact(iri), n) for iri, n in counts.items()), key=lambda p: p[0])
        if type_text and not any(name == type_text for name, _ in context["types"]):
            context["types"].append((type_text, None))
        limit = _int_param(params.get("limit"), DEFAULT_LIMIT, 1, MAX_LIMIT, t("err_limit", max=MAX_LIMIT))
        page = _int_param(params.get("page"), 1, 1, 10**6, t("err_page"))
        form["limit"] = str(limit)
        query = EntityQuery(limit=limit, offset=(page - 1) * limit, count=True)
        if type_text:
            try:
                query.types = parse_type_expr(type_text, ctx.expand)
            except TypeExprError as err:
                raise PageError(t("err_type", detail=str(err))) from None
        if q_text:
            try:
                query.q = qlang.expand_names(qlang.parse_q(q_text), ctx.expand)
            except qlang.QSyntaxError as err:
                raise PageError(t("err_q", detail=str(err))) from None
        if bbox_text:
            query.geo, context["bbox"] = _bbox_query(bbox_text, t)
        try:
            result = broker.query(tenant, query, principal)
        except ApiError as err:
            raise PageError(t("err_generic", detail=err.detail), err.status) from None
        except ValueError as err:  # e.g. a regular expression in q that Python's re rejects
            log.warning("entity browser query rejected: %s", err, exc_info=True)
            raise PageError(t("err_q", detail=str(err))) from None
    except PageError as err:
        context["errors"].append(err.message)
        status = err.status
    else:
        from society5.broker.model import Renderer

        renderer = Renderer(ctx, fmt="keyValues")
        for doc in result.docs:
            kv = renderer.entity(doc)
            etype = kv.get("type")
            context["rows"].append({
                "id": doc["id"], "url": _view_url(doc["id"], tenant),
                "type": _type_text(etype),
                "name": _text(kv.get("name"), lang) or "", "modified": _jst(doc.get("modifiedAt")),
            })
            feature = _feature(kv, tenant, lang)
            if feature is not None:
                context["features"].append(feature)
        total = result.count or 0
        pages = max(1, math.ceil(total / limit))
        context.update(searched=True, total=total)
        first = (page - 1) * limit
        context["pager"] = {
            "page": page, "pages": pages,
            "start": first + 1 if result.docs else 0, "end": first + len(result.docs),
            "prev": _url(request, page=page - 1, lang=None) if page > 1 else None,
            "next": _url(request, page=page + 1, lang=None) if page < pages else None,
        }
    return _render(request, "entities.html", context, status)


def _map_config() -> dict[str, Any]:
    return {"tiles": GSI_TILES, "attribution": GSI_ATTRIBUTION, "lat": HOKKAIDO_CENTER[0],
            "lon": HOKKAIDO_CENTER[1], "zoom": HOKKAIDO_ZOOM}


@router.get("/entities/view", response_class=HTMLResponse)
def entity_view(request: Request) -> Response:
    from society5.broker.model import Renderer

    shell = _shell(request, "entities")
    t, lang, principal = shell["t"], shell["lang"], shell["principal"]
    entity_id = (request.query_params.get("id") or "").strip()
    tenant = (request.query_params.get("tenant") or "").strip() or principal.tenant or DEFAULT_TENANT
    back = "/entities?" + urlencode({"tenant": tenant})
    if not entity_id:
        return _error_page(request, shell, t("err_id_missing"), 400)
    try:
        broker = _broker(request)
        doc = broker.retrieve(tenant, entity_id, principal)
    except PageError as err:
        return _error_page(request, shell, err.message, err.status)
    except ApiError as err:
        if err.title == "NonexistentTenant":
            message = t("err_tenant", detail=err.detail)
        elif err.status == 404:
            message = t("err_not_found", id=entity_id)
        else:
            message = t("err_generic", detail=err.detail)
        return _error_page(request, shell, message, err.status)
    ctx = broker.context()
    kv = Renderer(ctx, fmt="keyValues").entity(doc)
    normalized = Renderer(ctx, fmt="normalized", sys_attrs=True).entity(doc)
    attrs = []
    for name, value in kv.items():
        if name in ("id", "type", "scope"):
            continue
        simple = _text(value, lang) if not isinstance(value, dict) else None
        full = normalized.get(name)
        unit = full.get("unitCode") if isinstance(full, dict) else None
        observed = full.get("observedAt") if isinstance(full, dict) else None
        attrs.append({"name": name, "text": simple,
                      "json": None if simple is not None else _pretty(value, 60),
                      "unit": unit if isinstance(unit, str) else None, "observed": _jst(observed) or None})
    scope = kv.get("scope")
    feature = _feature(kv, tenant, lang)
    etype = kv.get("type")
    context = {
        **shell, "entity_id": entity_id, "tenant": tenant, "back": back, "attrs": attrs,
        "type": _type_text(etype), "name": _text(kv.get("name"), lang),
        "scope": ", ".join(scope) if isinstance(scope, list) else scope,
        "created": _jst(doc.get("createdAt")), "modified": _jst(doc.get("modifiedAt")),
        "normalized": _pretty(normalized), "features": [feature] if feature else [], "map": _map_config(),
        "api_path": "/ngsi-ld/v1/entities/" + quote(entity_id, safe=":"),
    }
    return _render(request, "entity.html", context)


def _safe_next(value: str | None) -> str:
    """Only a local path may follow a login (no open redirect to another site)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    shell = _shell(request, "login")
    return _render(request, "login.html", {**shell, "error": None, "username": "",
                                           "next": _safe_next(request.query_params.get("next"))})


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    from society5.core.sessions import make_session

    shell = _shell(request, "login")
    t = shell["t"]
    try:
        form = await request.form()
    except Exception:  # a body that is not a form: show the form again
        form = {}  # type: ignore[assignment]
    username = str(form.get("username") or "").strip()
    password = str(form.get("password") or "")
    target = _safe_next(str(form.get("next") or ""))
    context = {**shell, "username": username, "next": target}
    if not username or not password:
        return _render(request, "login.html", {**context, "error": t("login_missing")}, 400)
    plat = platform_of(request)
    principal = plat.users.authenticate(username, password)
    if principal is None:
        log.info("failed web login for %r", username)
        return _render(request, "login.html", {**context, "error": t("login_failed")}, 401)
    try:
        cookie = make_session(principal, plat.settings.effective_secret(), plat.settings.session_hours)
    except ConfigError as err:
        message = t("err_server_config", detail=str(err))
        return _render(request, "login.html", {**context, "error": message}, 503)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, cookie, max_age=plat.settings.session_hours * 3600, path="/",
                        httponly=True, samesite="lax", secure=request.url.scheme == "https")
    return response


@router.api_route("/logout", methods=["GET", "POST"])
def logout(request: Request) -> Response:
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax")
    return response


# -- admin: the MQTT bridge ----------------------------------------------------------------------------------

# The texts of this one admin page (the shell's words stay in i18n.MESSAGES).
MQTT_TEXTS: dict[str, dict[str, str]] = {
    "ja": {
        "title": "MQTT 取り込み", "bridge": "ブリッジの状態", "dead_letters": "取り込めなかったメッセージ",
        "lead": "センサーが MQTT で送ったデータをデータ連携基盤に書き込むブリッジの状態と、"
                "検証に失敗して保存できなかったメッセージ（デッドレター）です。",
        "not_configured": "MQTT ブローカーが設定されていません（SOCIETY5_MQTT_URL）。",
        "not_running": "このサーバープロセスではブリッジは動いていません（society5 mqtt で別に動かせます）。",
        "connected": "接続中", "disconnected": "未接続（再接続を試みています）",
        "counts": "受信 {received} 件 ・ 保存した値 {values} 件 ・ デッドレター {dead} 件（起動以降）",
        "dead_help": "トピック・内容・理由を確認し、送信側の機器や設定を直してください。"
                     "デッドレターは確認応答済みで、再送されません。",
        "shown": "{total} 件中 {start}–{end} 件を表示（新しい順）", "none": "デッドレターはありません。",
        "col_time": "受信日時 (JST)", "col_tenant": "テナント", "col_topic": "トピック", "col_error": "理由",
        "col_payload": "内容", "pages": "ページ",
        "need_admin": "このページは管理者だけが見られます。管理者としてログインしてください。",
    },
    "en": {
        "title": "MQTT ingestion", "bridge": "Bridge", "dead_letters": "Messages that could not be stored",
        "lead": "The state of the bridge that writes what sensors publish over MQTT into the platform, and "
                "the messages that failed validation and were not stored (dead letters).",
        "not_configured": "No MQTT broker is configured (SOCIETY5_MQTT_URL).",
        "not_running": "The bridge does not run in this server process (run it with society5 mqtt).",
        "connected": "connected", "disconnected": "not connected (reconnecting)",
        "counts": "received {received} · values stored {values} · dead letters {dead} (since start)",
        "dead_help": "Check the topic, payload and reason, then fix the sending device or its settings. "
                     "Dead letters are acknowledged and never delivered again.",
        "shown": "{start}–{end} of {total} (newest first)", "none": "There are no dead letters.",
        "col_time": "Received (JST)", "col_tenant": "Tenant", "col_topic": "Topic", "col_error": "Reason",
        "col_payload": "Payload", "pages": "Pages",
        "need_admin": "Only administrators may see this page. Log in as an administrator.",
    },
}
MQTT_PAGE_SIZE = 50


@router.get("/admin/mqtt", response_class=HTMLResponse)
def admin_mqtt(request: Request) -> Response:
    from society5.broker.mqtt_api import dead_letter_page

    shell = _shell(request, "admin")
    texts = MQTT_TEXTS[shell["lang"]]
    principal = shell["principal"]
    if not principal.is_admin:
        return _error_page(request, shell, texts["need_admin"], 401 if principal.anonymous else 403)
    raw_page = request.query_params.get("page") or "1"
    page = min(int(raw_page), 10**6) if raw_page.isdigit() and int(raw_page) > 0 else 1
    offset = (page - 1) * MQTT_PAGE_SIZE
    data = dead_letter_page(platform_of(request), None, MQTT_PAGE_SIZE, offset)
    rows = [{"time": _jst(r["receivedAt"]), "tenant": r["tenant"], "topic": r["topic"], "error": r["error"],
             "payload": r["payload"][:500]} for r in data["deadLetters"]]
    total = data["total"]
    context = {
        **shell, "m": texts, "bridge": data["bridge"], "rows": rows, "total": total,
        "start": offset + 1, "end": offset + len(rows),
        "prev": _url(request, page=page - 1, lang=None) if page > 1 else None,
        "next": _url(request, page=page + 1, lang=None) if offset + len(rows) < total else None,
    }
    return _render(request, "admin_mqtt.html", context)
