"""Alerts: a verified sighting, or a confident camera detection, warns everyone subscribed to its area.

An alert is an ``Alert`` entity in the broker (FIWARE Smart Data Model ``Alert``: category ``security``,
subCategory ``bearSighting``, severity, validFrom/validTo, location, alertSource → the sighting, plus our
``alertLevel``, ``alertRadius`` and ``status`` active/cancelled/expired) and one row in ``bears_alerts`` per
sighting. Raising again is harmless; a higher level later re-alerts (version + 1, CAP msgType Update); a
rejected sighting cancels its alert and tells those who were alerted. The entity is written first and the
row, the deliveries and their outbox messages commit together, so a crash in between leaves a sighting with
no row, which the catch-up job alerts again; nobody is told twice.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from society5.core.errors import NotFound
from society5.core.service import Job
from society5.core.timeutil import JST, iso, now_iso, parse_iso
from society5.notify import MessageTemplate, notifier_of, registry
from society5.notify.tables import deliveries as deliveries_table
from society5.services.bears import models, sightings, tables
from society5.services.bears.sightings import sightings_of
from society5.services.bears.subscriptions import subscriptions_of

log = logging.getLogger(__name__)

ENTITY_TYPE = "Alert"
LEVEL_JA = {1: "注意", 2: "警戒", 3: "危険"}
LEVEL_EN = {1: "Caution", 2: "Warning", 3: "Danger"}
RADIUS_M = {1: 500.0, 2: 1000.0, 3: 2000.0}  # the area warned grows with the danger
SEVERITY = {1: "medium", 2: "high", 3: "critical"}  # Smart Data Model Alert severity
CAMERA_SOURCES = ("camera", "drone")
NEAR_HOMES_M, NEAR_SCHOOL_M = 200.0, 500.0
KIND_EN = {"sighting": "sighting", "trace": "signs", "damage": "damage", "injury": "injury to a person"}
a = tables.alerts


# -- the level ---------------------------------------------------------------------------------------------
def level_of(s: dict[str, Any]) -> int:
    """1 注意 / 2 警戒 / 3 危険, from what happened, how the bear behaved and how close it is to people.

    An injury or an aggressive bear is 3 at once; damage starts at 2; a bear approaching or staying, one
    within NEAR_HOMES_M of homes or NEAR_SCHOOL_M of a school, and a mother with cubs (defensive) each add
    one."""
    kind, behaviour = s.get("kind", "sighting"), s.get("behaviour", "unknown")
    if kind == "injury" or behaviour == "aggressive":
        return 3
    level = 2 if kind == "damage" else 1
    if behaviour in ("approaching", "staying"):
        level += 1
    homes, school = s.get("distance_homes_m"), s.get("distance_school_m")
    if (homes is not None and homes <= NEAR_HOMES_M) or (school is not None and school <= NEAR_SCHOOL_M):
        level += 1
    if (s.get("cubs") or 0) > 0:
        level += 1
    return min(3, level)


def should_alert(platform: Any, s: dict[str, Any]) -> bool:
    if s.get("state") == "rejected" or s.get("merged_into") or "lat" not in s:
        return False
    if s.get("state") == "verified":
        return True
    confidence = s.get("confidence")
    return (
        s.get("source") in CAMERA_SOURCES
        and confidence is not None
        and confidence >= platform.settings.bears_alert_threshold
    )


def alert_id(tenant: str, sighting_id: str) -> str:
    key = sighting_id.rsplit(":", 1)[-1].removeprefix(tenant + "-")
    return f"urn:ngsi-ld:{ENTITY_TYPE}:{tenant}-bears-{key}"


def site_url(settings: Any) -> str:
    return (
        settings.base_url or settings.opendata_site_url or f"http://{settings.host}:{settings.port}"
    ).rstrip("/")


# -- what people read --------------------------------------------------------------------------------------
INSTRUCTION_JA = (
    "不要不急の外出を控えてください。ヒグマを見かけても絶対に近づかないでください。"
    "生ごみや果物など食べ物を屋外に置かないでください。襲われた・目の前にいるなど緊急の場合は110番へ。"
)
INSTRUCTION_EN = (
    "Stay indoors unless necessary. Never approach a bear. Do not leave food or garbage outside. "
    "In an emergency (attacked, or a bear right in front of you) call 110."
)

registry.register(
    MessageTemplate(
        name="bears.alert",
        title={
            "ja": "【ヒグマ{{ level_ja }}】{{ place }}で{{ kind_ja }}（{{ time }}）",
            "en": "[Bear {{ level_en }}] {{ kind_en }} at {{ place_en }} ({{ time }} JST)",
        },
        body={
            "ja": "{{ time }}ごろ、{{ place }}でヒグマの{{ kind_ja }}情報がありました。\n"
            "警戒レベル{{ level }}（{{ level_ja }}）：地点から約{{ radius_km }}kmの範囲に注意してください。\n"
            "{{ details_ja }}\n\n"
            "・不要不急の外出を控えてください。\n"
            "・ヒグマを見かけても近づかないでください。\n"
            "・生ごみや果物など、食べ物を外に置かないでください。\n"
            "・襲われた、目の前にいるなど緊急の場合は110番に通報してください。\n\n"
            "地図：{{ map_url }}\n"
            "この情報は{{ expires }}まで有効です。\n\n"
            "配信停止：{{ unsubscribe_url }}",
            "en": "Around {{ time }} (JST) a bear {{ kind_en }} was reported at {{ place_en }}.\n"
            "Alert level {{ level }} ({{ level_en }}): take care within about {{ radius_km }} km "
            "of the spot.\n"
            "{{ details_en }}\n\n"
            "- Stay indoors unless necessary.\n"
            "- Never approach a bear.\n"
            "- Do not leave food or garbage outside.\n"
            "- In an emergency (attacked, or a bear right in front of you) call 110.\n\n"
            "Map: {{ map_url }}\n"
            "This alert is valid until {{ expires }} (JST).\n\n"
            "Unsubscribe: {{ unsubscribe_url }}",
        },
    )
)
registry.register(
    MessageTemplate(
        name="bears.alert_cancel",
        title={
            "ja": "【取消】{{ place }}のヒグマ出没情報（{{ time }}）",
            "en": "[Cancelled] Bear alert at {{ place_en }} ({{ time }} JST)",
        },
        body={
            "ja": "{{ time }}ごろの{{ place }}のヒグマ出没情報は、確認の結果、取り消しました。\n"
            "引き続き、ヒグマに関する情報に注意してください。\n\n地図：{{ map_url }}",
            "en": "The bear alert for {{ place_en }} around {{ time }} (JST) was cancelled after checking.\n"
            "Please keep paying attention to bear information.\n\nMap: {{ map_url }}",
        },
    )
)


def _details(s: dict[str, Any]) -> tuple[str, str]:
    ja, en = [], []
    count, cubs = s.get("count") or 0, s.get("cubs") or 0
    if count:
        ja.append(f"頭数：{count}頭" + (f"（うち子グマ{cubs}頭）" if cubs else ""))
        en.append(f"Bears: {count}" + (f" (of them {cubs} cub{'s' if cubs > 1 else ''})" if cubs else ""))
    behaviour = s.get("behaviour")
    if behaviour and behaviour != "unknown":
        ja.append(f"様子：{models.BEHAVIOUR_JA.get(behaviour, behaviour)}")
        en.append(f"Behaviour: {behaviour}")
    if s.get("state") != "verified":
        ja.append("※自動カメラの検知です（職員による確認前）。")
        en.append("Note: detected by an automatic camera, not yet checked by staff.")
    return "\n".join(ja), "\n".join(en)


def info_of(s: dict[str, Any], level: int, issued: datetime, expires: datetime) -> dict[str, Any]:
    """The words of an alert (kept in the row: the CAP feed and the log read them)."""
    observed = parse_iso(s["observed_at"]).astimezone(JST)
    place = s.get("area_name") or s.get("municipality_name") or ""
    place_ja = f"{s.get('municipality_name', '')} {s['area_name']}".strip() if s.get("area_name") else place
    kind = s.get("kind", "sighting")
    details_ja, details_en = _details(s)
    return {
        "place": place_ja,
        "place_en": place_ja,
        "time": observed.strftime("%m/%d %H:%M"),
        "observed_at": s["observed_at"],
        "municipality": s.get("municipality"),
        "municipality_name": s.get("municipality_name"),
        "area_name": s.get("area_name"),
        "kind": kind,
        "kind_ja": models.KIND_JA[kind],
        "kind_en": KIND_EN[kind],
        "level": level,
        "level_ja": LEVEL_JA[level],
        "level_en": LEVEL_EN[level],
        "radius_m": RADIUS_M[level],
        "radius_km": f"{RADIUS_M[level] / 1000:g}",
        "details_ja": details_ja,
        "details_en": details_en,
        "expires": expires.astimezone(JST).strftime("%m/%d %H:%M"),
        "headline_ja": f"ヒグマ{LEVEL_JA[level]}：{place_ja}で{models.KIND_JA[kind]}",
        "headline_en": f"Bear {LEVEL_EN[level].lower()}: {KIND_EN[kind]} at {place_ja}",
        "certainty": "Observed" if s.get("state") == "verified" else "Likely",
        "issued_at": iso(issued),
    }


def entity(tenant: str, s: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    info = row["info"]

    def prop(v: Any, **more: Any) -> dict[str, Any]:
        return {"type": "Property", "value": v, **more}

    return {
        "id": row["id"],
        "type": ENTITY_TYPE,
        "category": prop("security"),
        "subCategory": prop("bearSighting"),
        "severity": prop(SEVERITY[row["level"]]),
        "alertLevel": prop(row["level"]),
        "name": prop(info["headline_ja"]),
        "description": prop(f"{info['headline_ja']}\n{info['details_ja']}".strip()),
        "dateIssued": prop(row["issued_at"]),
        "validFrom": prop(row["issued_at"]),
        "validTo": prop(row["expires_at"]),
        "status": prop(row["status"]),
        "alertRadius": prop(row["radius_m"], unitCode="MTR"),
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [s["lon"], s["lat"]]}},
        "alertSource": {"type": "Relationship", "object": s["id"]},
        "municipalityCode": prop(s.get("municipality") or tenant),
    }


# -- raising, cancelling, expiring -------------------------------------------------------------------------
class _Raced(Exception):
    """Another thread or process raised the same alert between our read and our write."""


def _row(conn: Connection, tenant: str, sighting_id: str) -> dict[str, Any] | None:
    q = sa.select(a).where(a.c.tenant == tenant, a.c.sighting_id == sighting_id)
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()
    found = conn.execute(q).first()
    return None if found is None else dict(found._mapping)


def raise_alert(platform: Any, tenant: str, s: dict[str, Any]) -> dict[str, Any] | None:
    """Alert for sighting ``s`` (flat form); None when it needs none. Returns the alert row."""
    if not should_alert(platform, s):
        return None
    now = datetime.now(UTC)
    hours = timedelta(hours=platform.settings.bears_alert_hours)
    if parse_iso(s["observed_at"]) < now - hours:
        return None  # old news: the map shows it, nobody is woken for it
    level = level_of(s)
    with platform.engine.connect() as conn:
        current = _row(conn, tenant, s["id"])
    if current is not None:
        reopen = current["status"] == "cancelled" and s.get("state") == "verified"  # rejected, then verified
        higher = current["status"] == "active" and level > current["level"]
        if not (reopen or higher):
            return current
    issued, expires = now, now + hours
    info = info_of(s, level, issued, expires)
    row = {
        "id": alert_id(tenant, s["id"]),
        "tenant": tenant,
        "sighting_id": s["id"],
        "level": level,
        "lat": s["lat"],
        "lon": s["lon"],
        "radius_m": RADIUS_M[level],
        "issued_at": iso(issued),
        "expires_at": iso(expires),
        "cancelled_at": None,
        "info": info,
        "status": "active",
        "version": 1 if current is None else current["version"] + 1,
        "updated_at": iso(issued),
        "recipients": 0,
        "request_id": None,
    }
    if current is not None:
        row["issued_at"] = info["issued_at"] = current["issued_at"]  # CAP references the first message
    platform.parts["broker"].upsert(tenant, [entity(tenant, s, row)], mode="replace")
    try:
        with platform.engine.begin() as conn:
            # Claim the alert first (insert, or bump the version we read): a concurrent raise of the same
            # sighting fails here, before telling anyone, and its whole transaction rolls back.
            if current is None:
                conn.execute(a.insert().values(**row))
            else:
                claimed = conn.execute(
                    a.update()
                    .where(a.c.id == row["id"], a.c.version == current["version"])
                    .values({k: v for k, v in row.items() if k not in ("id", "tenant", "sighting_id")})
                )
                if not claimed.rowcount:
                    raise _Raced
            ids, request = _fan_out(platform, conn, tenant, s, row)
            row["recipients"], row["request_id"] = len(ids), request
            conn.execute(
                a.update().where(a.c.id == row["id"]).values(recipients=len(ids), request_id=request)
            )
    except (sa.exc.IntegrityError, _Raced):
        with platform.engine.connect() as conn:
            return _row(conn, tenant, s["id"])
    sightings_of(platform).set_attrs(tenant, s["id"], {"alertLevel": level})
    log.info("bear alert %s level %d for %s: %d recipients", row["id"], level, s["id"], row["recipients"])
    return row


def _fan_out(
    platform: Any, conn: Connection, tenant: str, s: dict[str, Any], row: dict[str, Any]
) -> tuple[list[str], str | None]:
    tokens = subscriptions_of(platform).matching(
        conn, tenant, s["lat"], s["lon"], s.get("municipality"), row["level"], reach_m=row["radius_m"]
    )
    if not tokens:
        return [], None
    base = site_url(platform.settings)
    ctx = {**row["info"], "map_url": f"{base}/bears/?focus={s['id']}"}

    def personal(person: Any) -> dict[str, str]:
        return {"unsubscribe_url": f"{base}/bears/unsubscribe?token={tokens[person.id]}"}

    ids = notifier_of(platform).tell(
        list(tokens), "bears.alert", ctx, tenant=tenant, conn=conn, urgent=True, personal=personal
    )
    request = None
    if ids:
        request = conn.execute(
            sa.select(deliveries_table.c.request).where(deliveries_table.c.id == ids[0])
        ).scalar_one()
    return ids, request


def cancel_alert(platform: Any, tenant: str, s: dict[str, Any]) -> dict[str, Any] | None:
    """A rejected sighting: cancel its alert (CAP Cancel) and tell those who were alerted."""
    now = now_iso()
    with platform.engine.begin() as conn:
        current = _row(conn, tenant, s["id"])
        if current is None or current["status"] == "cancelled":
            return current
        conn.execute(
            a.update()
            .where(a.c.id == current["id"])
            .values(status="cancelled", cancelled_at=now, updated_at=now, version=current["version"] + 1)
        )
        told = []
        if current["request_id"] and current["status"] == "active":
            d = deliveries_table
            told = sorted(
                conn.execute(
                    sa.select(d.c.recipient)
                    .distinct()
                    .where(d.c.tenant == tenant, d.c.request == current["request_id"])
                ).scalars()
            )
            if told:
                ctx = {**current["info"], "map_url": f"{site_url(platform.settings)}/bears/"}
                notifier_of(platform).tell(
                    told, "bears.alert_cancel", ctx, tenant=tenant, conn=conn, urgent=True
                )
    _set_status(platform, tenant, current["id"], "cancelled", validTo=now)
    sightings_of(platform).set_attrs(tenant, s["id"], {"alertLevel": 0})
    current.update(status="cancelled", cancelled_at=now)
    return current


def _set_status(platform: Any, tenant: str, entity_id: str, status: str, **more: Any) -> None:
    attrs = {"status": status, **more}
    try:
        platform.parts["broker"].upsert(
            tenant,
            [
                {
                    "id": entity_id,
                    "type": ENTITY_TYPE,
                    **{k: {"type": "Property", "value": v} for k, v in attrs.items()},
                }
            ],
            mode="update",
        )
    except NotFound:  # the entity was never written (a crash before it): the row is what counts
        log.warning("alert entity %s is missing in %s", entity_id, tenant)


def on_sighting(platform: Any, tenant: str, s: dict[str, Any], event: str) -> None:
    if event == "rejected":
        cancel_alert(platform, tenant, s)
    elif event in ("verified", "created", "updated"):
        raise_alert(platform, tenant, s)


sightings.listeners.append(on_sighting)


# -- jobs --------------------------------------------------------------------------------------------------
def expire_alerts(platform: Any) -> int:
    """Active alerts whose validTo passed become ``expired`` (row and entity)."""
    now = now_iso()
    with platform.engine.connect() as conn:
        due = conn.execute(
            sa.select(a.c.id, a.c.tenant).where(a.c.status == "active", a.c.expires_at < now).limit(1000)
        ).all()
    for r in due:
        with platform.engine.begin() as conn:
            done = conn.execute(
                a.update()
                .where(a.c.id == r.id, a.c.status == "active")
                .values(status="expired", updated_at=now)
            )
        if done.rowcount:
            _set_status(platform, r.tenant, r.id, "expired")
    return len(due)


def catch_up(platform: Any) -> int:
    """Alert sightings that should have one and have none (the process died between storing and alerting)."""
    if "broker" not in platform.parts:
        return 0
    since = datetime.now(UTC) - timedelta(hours=platform.settings.bears_alert_hours)
    raised = 0
    store = sightings_of(platform)
    for t in platform.tenants.list():
        tenant = str(t["code"])
        with platform.engine.connect() as conn:
            have = set(
                conn.execute(
                    sa.select(a.c.sighting_id).where(a.c.tenant == tenant, a.c.issued_at >= iso(since))
                ).scalars()
            )
        for s in store.list(tenant, since=since, states=["verified", "unverified"]):
            if s["id"] not in have and should_alert(platform, s):
                try:
                    if raise_alert(platform, tenant, s) is not None:
                        raised += 1
                except Exception:
                    log.exception("catching up the alert of %s failed", s["id"])
    return raised


JOBS: tuple[Job, ...] = (
    Job("expire_alerts", every=timedelta(minutes=1), run=expire_alerts),
    Job("alerts_catch_up", every=timedelta(minutes=5), run=catch_up),
)


# -- reads -------------------------------------------------------------------------------------------------
def active(
    platform: Any, tenants: list[str] | None = None, *, with_cancelled: bool = False
) -> list[dict[str, Any]]:
    """Alerts in force, newest first; ``with_cancelled`` adds those withdrawn before they would have expired
    (relays that spread them must see the Cancel)."""
    states = ["active", "cancelled"] if with_cancelled else ["active"]
    q = sa.select(a).where(a.c.status.in_(states), a.c.expires_at >= now_iso())
    if tenants is not None:
        q = q.where(a.c.tenant.in_(tenants))
    with platform.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q.order_by(a.c.issued_at.desc()).limit(500))]


def one(platform: Any, alert: str) -> dict[str, Any]:
    with platform.engine.connect() as conn:
        found = conn.execute(sa.select(a).where(a.c.id == alert)).first()
    if found is None:
        raise NotFound(f"no alert {alert!r} / 該当する警報がありません")
    return dict(found._mapping)


def log_of(platform: Any, tenant: str, limit: int = 200, offset: int = 0) -> list[dict[str, Any]]:
    """Every alert of the tenant, newest first, with how its deliveries went (counts per status)."""
    with platform.engine.connect() as conn:
        rows = [
            dict(r._mapping)
            for r in conn.execute(
                sa.select(a)
                .where(a.c.tenant == tenant)
                .order_by(a.c.issued_at.desc())
                .limit(limit)
                .offset(offset)
            )
        ]
        requests = [r["request_id"] for r in rows if r["request_id"]]
        d = deliveries_table
        counts: dict[str, dict[str, int]] = {}
        if requests:
            for req, status, n in conn.execute(
                sa.select(d.c.request, d.c.status, sa.func.count())
                .where(d.c.tenant == tenant, d.c.request.in_(requests))
                .group_by(d.c.request, d.c.status)
            ):
                counts.setdefault(req, {})[status] = n
    for r in rows:
        r["deliveries"] = counts.get(r["request_id"] or "", {})
    return rows
