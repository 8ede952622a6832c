"""The bears service's demo content (``society5 demo``): cameras, past sightings, subscribers. Idempotent.

Two towns: 札幌市南区 (藻岩山・真駒内・簾舞, where bears come down the green belts) and 砂川市. Each gets
``CameraTrap`` entities, a few past sightings of every source and state (two unverified resident reports close
together, so the staff console shows a merge proposal; a verified staff sighting two hours old, so an alert
is active at once), and demo subscribers: a school, residents and the town's staff.

Subscribers are notify recipients whose first channel is MQTT to the local Mosquitto
(``mqtt://127.0.0.1:1883/society5-demo/bears/<tenant>/<recipient>``, or the host of ``SOCIETY5_MQTT_URL``):
it works offline and anyone can watch the alerts with ``mosquitto_sub -t 'society5-demo/bears/#' -v``.
The second channel is an ``example.jp`` mail address: with no SMTP server configured (the demo's default)
mail is off, so when Mosquitto is not running a delivery gives up after a few quiet retries instead of
retrying for hours; ``example.jp`` is reserved, so a configured SMTP server never reaches a real person.

Everything is fictional and labelled （デモ）. A second load creates nothing: cameras and recipients are
looked up by key, and a town that has any sighting gets no more.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from society5.core.errors import NotFound
from society5.services.bears.sightings import sightings_of

log = logging.getLogger(__name__)

SAPPORO, SUNAGAWA = "011002", "012262"
TENANTS = (SAPPORO, SUNAGAWA)
DEMO = "（デモ）"
STAFF = "デモ職員"
# (tenant, key, name, area, lat, lon, metres to the nearest homes)
CAMERAS = (
    (SAPPORO, "moiwa-01", "藻岩山 南麓 1号機", "南区 藻岩山麓", 43.0236, 141.3221, 300),
    (SAPPORO, "makomanai-01", "真駒内 林縁 1号機", "南区 真駒内公園南", 42.9880, 141.3480, 450),
    (SAPPORO, "misumai-01", "簾舞 河畔林 1号機", "南区 簾舞", 42.9640, 141.2930, 600),
    (SUNAGAWA, "sorachibuto-01", "空知太 河畔林 1号機", "砂川市 空知太", 43.5160, 141.9120, 400),
    (SUNAGAWA, "higashi-01", "東部山林 1号機", "砂川市 東部", 43.4990, 141.9300, 900),
)


def _past(tenant: str, hours: float, lat: float, lon: float, state: str, **fields: Any) -> dict[str, Any]:
    return {"tenant": tenant, "hours": hours, "lat": lat, "lon": lon, "state": state, "fields": fields}


# A past sighting: "verified" is a staff or police record (verified by its author), "verified-by-staff" and
# "rejected" a resident's report that staff looked at; descriptions are fictional.
SIGHTINGS = (
    _past(SAPPORO, 2, 42.9891, 141.3466, "verified", area_name="南区 真駒内公園南", behaviour="passing",
          direction="S", distance_homes_m=350, source="staff",
          description="林縁を南へ移動する成獣1頭を職員が確認" + DEMO),
    _past(SAPPORO, 5, 42.9902, 141.3511, "unverified", area_name="南区 真駒内 住宅地東側", source="resident",
          description="散歩中に茂みの中に黒い大きな動物を見た" + DEMO),
    _past(SAPPORO, 4.5, 42.9915, 141.3490, "unverified", area_name="南区 真駒内 住宅地東側",
          source="resident", direction="E", description="道路を横切るクマを見た" + DEMO),
    _past(SAPPORO, 26, 43.0249, 141.3198, "verified-by-staff", area_name="南区 藻岩山 登山道", kind="trace",
          trace="footprints", count=0, source="resident", description="登山道の泥に大きな足跡" + DEMO),
    _past(SAPPORO, 72, 42.9700, 141.3200, "verified", area_name="南区 石山 畑地", kind="damage",
          behaviour="feeding", source="police", description="デントコーン畑の食害" + DEMO),
    _past(SAPPORO, 216, 42.9655, 141.2952, "verified-by-staff", area_name="南区 簾舞", count=2, cubs=1,
          behaviour="staying", source="resident", description="親子グマ" + DEMO),
    _past(SAPPORO, 290, 43.0050, 141.3350, "rejected", area_name="南区 川沿", source="resident",
          description="黒い大きな犬だった（職員確認）" + DEMO),
    _past(SUNAGAWA, 30, 43.5149, 141.9105, "verified", area_name="砂川市 空知太 河畔林", kind="trace",
          trace="dung", count=0, source="staff", description="河川敷で糞を確認" + DEMO),
    _past(SUNAGAWA, 7, 43.5010, 141.9282, "unverified", area_name="砂川市 東部 市道", direction="E",
          source="resident", description="車の前を横切った" + DEMO),
    _past(SUNAGAWA, 360, 43.4950, 141.9200, "verified", area_name="砂川市 東部", source="police",
          behaviour="fleeing", description="通報により警察官が確認" + DEMO),
)
# (tenant, recipient key, name, subscription kind, area: circle (lat, lon, radius_m) or None = the whole town)
SUBSCRIBERS = (
    (SAPPORO, "school-makomanai", "真駒内の小学校" + DEMO, "school", (42.9935, 141.3455, 2000.0)),
    (SAPPORO, "resident-minami", "南区の住民" + DEMO, "resident", (43.0100, 141.3300, 3000.0)),
    (SAPPORO, "staff-sapporo", "札幌市 ヒグマ対策担当" + DEMO, "staff", None),
    (SUNAGAWA, "resident-sunagawa", "砂川市の住民" + DEMO, "resident", (43.5050, 141.9150, 3000.0)),
    (SUNAGAWA, "staff-sunagawa", "砂川市 ヒグマ対策担当" + DEMO, "staff", None),
)


def cameras(platform: Any) -> int:
    """The demo's CameraTrap entities; returns how many were created."""
    from society5.services.bears import cameras as cams

    made = 0
    for tenant, key, name, area, lat, lon, homes in CAMERAS:
        try:
            cams.get(platform, tenant, key)
            continue
        except NotFound:
            pass
        cams.create(platform, tenant, {"key": key, "name": name, "lat": lat, "lon": lon, "area_name": area,
                                       "distance_homes_m": homes,
                                       "description": "デモ用の自動撮影カメラ / a simulated demo camera"})
        made += 1
    return made


def sightings(platform: Any, now: datetime | None = None) -> int:
    """Past sightings for each town that has none yet; returns how many were created."""
    store = sightings_of(platform)
    moment = now or datetime.now(UTC)
    made = 0
    for tenant in TENANTS:
        if store.list(tenant, merged=True, limit=1):
            continue
        for past in (p for p in SIGHTINGS if p["tenant"] == tenant):
            data = {"observed_at": (moment - timedelta(hours=past["hours"])).isoformat(), "lat": past["lat"],
                    "lon": past["lon"], **past["fields"]}
            state = past["state"]
            s = store.create(tenant, data, state="verified" if state == "verified" else "unverified")
            if state in ("verified-by-staff", "rejected"):
                store.set_state(tenant, s["id"], state.removesuffix("-by-staff"), STAFF)
            made += 1
    return made


def _mqtt_base(settings: Any) -> str:
    url = urlsplit(settings.mqtt_url) if settings.mqtt_url else None
    host = url.hostname if url and url.hostname else "127.0.0.1"
    port = url.port if url and url.port else 1883
    return f"mqtt://{host}:{port}/{settings.mqtt_topic_prefix}-demo/bears"  # beside the bridge's topics


def subscribers(platform: Any) -> int:
    """Demo alert subscribers (notify recipients and their areas); returns how many were created."""
    from society5.notify import notifier_of
    from society5.services.bears.subscriptions import subscriptions_of

    recipients = notifier_of(platform).recipients
    subs = subscriptions_of(platform)
    base = _mqtt_base(platform.settings)
    made = 0
    for tenant, key, name, kind, circle in SUBSCRIBERS:
        rid = f"bears-demo-{key}"
        if recipients.find(tenant, rid) is None:
            recipients.create(tenant, {
                "id": rid, "name": name, "language": "ja", "tags": ["bears", "demo"],
                "channels": {"mqtt": f"{base}/{tenant}/{rid}", "mail": f"{rid}@example.jp"},
                "order": ["mqtt", "mail"]})
        if any(s["recipient_id"] == rid for s in subs.list(tenant)):
            continue
        area: dict[str, Any] = ({"lat": circle[0], "lon": circle[1], "radius_m": circle[2]} if circle
                                else {"municipality": tenant})
        subs.create(tenant, {"kind": kind, "recipient": rid, "area_name": name, **area})
        made += 1
    return made


def load(platform: Any) -> dict[str, int]:
    """Create whatever of the demo content is missing (the broker must be started); publish the open data."""
    for code, name in ((SAPPORO, "札幌市"), (SUNAGAWA, "砂川市")):
        if not platform.tenants.exists(code):  # (ensure with a name would overwrite a known town's place)
            platform.tenants.ensure(code, name=name)
    # Subscribers first: the recent verified sighting's alert reaches them (queued now, sent once the server
    # runs); older sightings raise no alert (the alerts part leaves old news to the map).
    made = {"cameras": cameras(platform), "subscribers": subscribers(platform)}
    made["sightings"] = sightings(platform)
    from society5.services.bears import publish

    made["published"] = sum(publish.publish_now(platform, list(TENANTS)).values())
    return made
