"""Bear alerts: when they are raised, their level, who is told, cancel, expiry, catch-up, real delivery."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from society5.core.outbox import RetryPolicy
from society5.notify import notifier_of
from society5.notify.tables import deliveries
from society5.services.bears import alerts, tables
from society5.services.bears.sightings import sightings_of
from society5.services.bears.subscriptions import subscriptions_of
from tests.notify.conftest import StandIn, _serve, _start_smtp, mail_settings
from tests.services.bears.conftest import OTHER_TENANT, TENANT

SPOT = (43.0236, 141.3221)  # 札幌市 中央区 (south-west of the office)


def sighting(**extra: Any) -> dict[str, Any]:
    when = datetime.now(UTC) - timedelta(minutes=5)
    return {"observed_at": when.isoformat(), "lat": SPOT[0], "lon": SPOT[1], "area_name": "藻岩山麓", **extra}


def subscribe(platform: Any, tenant: str = TENANT, **area: Any) -> dict[str, Any]:
    n = len(subscriptions_of(platform).list(tenant))
    data = {"channel": "mail", "address": f"user{n}@example.jp", **area}
    if "municipality" not in area:
        data.setdefault("lat", SPOT[0])
        data.setdefault("lon", SPOT[1])
        data.setdefault("radius_m", 300)
    return subscriptions_of(platform).create(tenant, data)


def told(platform: Any, tenant: str = TENANT, template: str = "bears.alert") -> list[Any]:
    with platform.engine.connect() as conn:
        return conn.execute(
            sa.select(deliveries).where(deliveries.c.tenant == tenant, deliveries.c.template == template)
        ).all()


def alert_rows(platform: Any) -> list[dict[str, Any]]:
    with platform.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(sa.select(tables.alerts))]


# -- levels ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("facts", "level"),
    [
        ({}, 1),
        ({"kind": "trace"}, 1),
        ({"behaviour": "passing", "distance_homes_m": 800}, 1),
        ({"behaviour": "approaching"}, 2),
        ({"behaviour": "staying"}, 2),
        ({"distance_homes_m": 150}, 2),
        ({"distance_school_m": 400}, 2),
        ({"count": 3, "cubs": 2}, 2),
        ({"kind": "damage"}, 2),
        ({"kind": "damage", "distance_homes_m": 50}, 3),
        ({"behaviour": "approaching", "distance_school_m": 100}, 3),
        ({"behaviour": "aggressive"}, 3),
        ({"kind": "injury"}, 3),
    ],
)
def test_level_rules(facts: dict[str, Any], level: int) -> None:
    assert alerts.level_of(facts) == level
    assert alerts.RADIUS_M[level] == {1: 500, 2: 1000, 3: 2000}[level]


# -- raising -----------------------------------------------------------------------------------------------
def test_verified_sighting_alerts_subscribers_inside_not_outside(bears_platform) -> None:
    p = bears_platform
    inside = subscribe(p)  # 300 m around the spot
    near_edge = subscribe(p, lat=SPOT[0] + 0.0065, radius_m=300)  # 720 m: within reach of a 500 m alert
    far = subscribe(p, lat=SPOT[0] + 0.05, radius_m=300)  # ~5.5 km away
    whole_city = subscribe(p, municipality=TENANT)
    picky = subscribe(p, min_level=3)
    other_town = subscribe(p, tenant=OTHER_TENANT, lat=SPOT[0], lon=SPOT[1], radius_m=5000)

    s = sightings_of(p).create(TENANT, sighting(source="resident"))
    assert alert_rows(p) == []  # an unverified resident report alerts nobody
    s = sightings_of(p).set_state(TENANT, s["id"], "verified", "staff")
    [row] = alert_rows(p)
    assert row["level"] == 1 and row["status"] == "active" and row["radius_m"] == 500
    got = {d.recipient for d in told(p)}
    assert got == {inside["recipient_id"], near_edge["recipient_id"], whole_city["recipient_id"]}
    assert far["recipient_id"] not in got and picky["recipient_id"] not in got
    assert told(p, OTHER_TENANT) == []  # tenant isolation: the other town's subscribers hear nothing
    assert row["recipients"] == 3 and other_town["tenant"] == OTHER_TENANT

    message = next(d for d in told(p) if d.recipient == inside["recipient_id"])
    assert message.urgent and message.title.startswith("【ヒグマ注意】") and "藻岩山麓" in message.title
    text = message.body_text
    for needed in (
        "外出を控え",
        "近づかない",
        "食べ物を外に置かない",
        "110番",
        f"/bears/?focus={s['id']}",
        "/bears/unsubscribe?token=",
    ):
        assert needed in text, needed
    assert sightings_of(p).get(TENANT, s["id"])["alert_level"] == 1

    ent = p.parts["broker"].get(TENANT, row["id"], fmt="keyValues")
    assert ent["type"] == "Alert" and ent["subCategory"] == "bearSighting" and ent["severity"] == "medium"
    assert ent["alertSource"] == s["id"] and ent["status"] == "active"
    assert ent["validTo"] == row["expires_at"] and ent["location"]["coordinates"] == [SPOT[1], SPOT[0]]


def test_raising_twice_is_harmless_and_a_higher_level_re_alerts(bears_platform) -> None:
    p = bears_platform
    sub = subscribe(p)
    s = sightings_of(p).create(TENANT, sighting(source="staff"), state="verified")
    assert len(told(p)) == 1
    alerts.raise_alert(p, TENANT, sightings_of(p).get(TENANT, s["id"]))
    assert len(told(p)) == 1 and alert_rows(p)[0]["version"] == 1
    sightings_of(p).update(TENANT, s["id"], {"behaviour": "aggressive"})
    [row] = alert_rows(p)
    assert row["level"] == 3 and row["version"] == 2 and row["radius_m"] == 2000
    assert [d.title.startswith("【ヒグマ危険】") for d in told(p)].count(True) == 1
    assert {d.recipient for d in told(p)} == {sub["recipient_id"]}


def test_confident_camera_detection_alerts_before_verification(bears_platform) -> None:
    p = bears_platform
    subscribe(p)
    threshold = p.settings.bears_alert_threshold
    sightings_of(p).create(TENANT, sighting(source="camera", confidence=threshold - 0.1))
    assert alert_rows(p) == []
    s = sightings_of(p).create(TENANT, sighting(source="camera", confidence=threshold))
    [row] = alert_rows(p)
    assert row["sighting_id"] == s["id"] and row["info"]["certainty"] == "Likely"
    assert "自動カメラ" in told(p)[0].body_text


def test_reject_cancels_and_tells_those_alerted(bears_platform) -> None:
    p = bears_platform
    sub = subscribe(p)
    s = sightings_of(p).create(TENANT, sighting(source="camera", confidence=0.99))
    sightings_of(p).set_state(TENANT, s["id"], "rejected", "staff")
    [row] = alert_rows(p)
    assert row["status"] == "cancelled" and row["cancelled_at"] and row["version"] == 2
    assert [d.recipient for d in told(p, template="bears.alert_cancel")] == [sub["recipient_id"]]
    assert p.parts["broker"].get(TENANT, row["id"], fmt="keyValues")["status"] == "cancelled"
    assert alerts.active(p) == []
    sightings_of(p).set_state(TENANT, s["id"], "verified", "chief")  # a mistake after all: alert anew
    assert alert_rows(p)[0]["status"] == "active" and len(told(p)) == 2


def test_expiry_job(bears_platform) -> None:
    p = bears_platform
    s = sightings_of(p).create(TENANT, sighting(), state="verified")
    assert alerts.expire_alerts(p) == 0
    with p.engine.begin() as conn:
        conn.execute(tables.alerts.update().values(expires_at="2000-01-01T00:00:00.000000Z"))
    assert alerts.expire_alerts(p) == 1
    [row] = alert_rows(p)
    assert row["status"] == "expired" and alerts.active(p) == []
    assert p.parts["broker"].get(TENANT, row["id"], fmt="keyValues")["status"] == "expired"
    assert alerts.expire_alerts(p) == 0 and s["id"] == row["sighting_id"]


def test_catch_up_alerts_verified_sightings_that_have_none(bears_platform) -> None:
    p = bears_platform
    sub = subscribe(p)
    alerts_listener = alerts.on_sighting
    from society5.services.bears import sightings

    sightings.listeners.remove(alerts_listener)  # the process "dies" between storing and alerting
    try:
        s = sightings_of(p).create(TENANT, sighting(), state="verified")
        old = sightings_of(p).create(
            TENANT,
            sighting(observed_at=(datetime.now(UTC) - timedelta(hours=30)).isoformat()),
            state="verified",
        )
        sightings_of(p).create(TENANT, sighting(source="resident"))
    finally:
        sightings.listeners.append(alerts_listener)
    assert alert_rows(p) == []
    assert alerts.catch_up(p) == 1  # the old one is history, the unverified report waits for staff
    [row] = alert_rows(p)
    assert row["sighting_id"] == s["id"] != old["id"]
    assert [d.recipient for d in told(p)] == [sub["recipient_id"]]
    assert alerts.catch_up(p) == 0


def test_log_counts_deliveries(bears_platform) -> None:
    p = bears_platform
    subscribe(p)
    subscribe(p, lat=SPOT[0] + 0.001)
    sightings_of(p).create(TENANT, sighting(), state="verified")
    [entry] = alerts.log_of(p, TENANT)
    assert entry["recipients"] == 2 and entry["deliveries"] == {"queued": 2}
    assert alerts.log_of(p, OTHER_TENANT) == []


# -- real delivery -----------------------------------------------------------------------------------------
@pytest.fixture
def sink() -> Iterator[StandIn]:
    stand = StandIn()
    server = _serve(stand)
    yield stand
    server.shutdown()


def test_delivery_reaches_a_webhook_and_an_smtp_server(bears_platform, sink: StandIn) -> None:
    p = bears_platform
    controller, smtp = _start_smtp(None)
    try:
        p.settings = p.settings.model_copy(update=mail_settings(smtp))
        p.outbox.policy = RetryPolicy(base_s=0.0, max_s=0.0, max_attempts=2)
        notifier_of(p)
        hook = subscriptions_of(p).create(
            TENANT,
            {
                "channel": "webhook",
                "address": f"{sink.url}/alerts",
                "kind": "system",
                "lat": SPOT[0],
                "lon": SPOT[1],
                "radius_m": 1000,
            },
        )
        mail = subscribe(p)
        s = sightings_of(p).create(TENANT, sighting(kind="damage"), state="verified")
        assert p.outbox.deliver_due() == 2
    finally:
        controller.stop()
    [posted] = sink.requests
    body = posted.json()
    assert posted.path == "/alerts" and body["recipient"] == hook["recipient_id"] and body["urgent"] is True
    assert body["title"].startswith("【ヒグマ警戒】") and s["id"] in body["text"]
    [(_sender, to, msg)] = smtp.box.messages
    assert to == ["user1@example.jp"] and msg["Importance"] == "high" and mail["confirmed"]
    assert "ヒグマ警戒" in str(msg["Subject"])
    assert "110番" in msg.get_body(preferencelist=("plain",)).get_content()
    assert alerts.log_of(p, TENANT)[0]["deliveries"] == {"sent": 2}
