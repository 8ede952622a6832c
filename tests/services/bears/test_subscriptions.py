"""Area subscriptions: validation, recipient reuse, the fan-out query, confirmation and unsubscribe links."""

from __future__ import annotations

from typing import Any

import pytest

from society5.core.errors import BadRequest, NotFound, TooManyRequests
from society5.services.bears import subscriptions as subs_mod
from society5.services.bears.subscriptions import subscriptions_of
from tests.services.bears.conftest import OTHER_TENANT, TENANT

SPOT = (43.0236, 141.3221)


def make(p: Any, tenant: str = TENANT, address: str = "a@example.jp", **area: Any) -> dict[str, Any]:
    data = {"channel": "mail", "address": address, **area}
    if "municipality" not in area:
        data = {"lat": SPOT[0], "lon": SPOT[1], "radius_m": 1000, **data}
    return subscriptions_of(p).create(tenant, data)


def matching(
    p: Any,
    tenant: str = TENANT,
    level: int = 1,
    reach_m: float = 0.0,
    lat: float = SPOT[0],
    lon: float = SPOT[1],
    municipality: str | None = TENANT,
) -> set[str]:
    with p.engine.connect() as conn:
        return set(subscriptions_of(p).matching(conn, tenant, lat, lon, municipality, level, reach_m))


def test_fan_out_query(bears_platform) -> None:
    p = bears_platform
    inside = make(p, address="in@example.jp")
    # 0.0095° of latitude is about 1,056 m: just outside a 1,000 m circle, inside once an alert reaches 100 m.
    edge = make(p, address="edge@example.jp", lat=SPOT[0] + 0.0095)
    east = make(p, address="east@example.jp", lon=SPOT[1] + 0.02, radius_m=500)  # ~1.6 km east
    city = make(p, address="city@example.jp", municipality=TENANT)
    high = make(p, address="high@example.jp", min_level=2)
    off = make(p, address="off@example.jp")
    subscriptions_of(p).update(TENANT, off["id"], {"active": False})
    make(p, tenant=OTHER_TENANT, address="other@example.jp", radius_m=50_000)

    assert matching(p) == {inside["recipient_id"], city["recipient_id"]}
    assert matching(p, reach_m=100) == {inside["recipient_id"], edge["recipient_id"], city["recipient_id"]}
    assert matching(p, level=2) == {inside["recipient_id"], city["recipient_id"], high["recipient_id"]}
    assert east["recipient_id"] in matching(p, reach_m=2000)
    assert matching(p, municipality="012106") == {
        inside["recipient_id"],
        city["recipient_id"],
    }  # tenant's own
    assert matching(p, tenant=OTHER_TENANT, municipality=None) == {
        subs_mod.recipient_id("mail", "other@example.jp")
    }


def test_one_recipient_per_address(bears_platform) -> None:
    p = bears_platform
    a = make(p, address="Same@Example.jp")
    b = make(p, address="same@example.jp", municipality=TENANT)
    assert a["recipient_id"] == b["recipient_id"]
    assert matching(p) == {a["recipient_id"]}  # one message even when two areas match


def test_validation_names_the_field(bears_platform) -> None:
    p = bears_platform
    cases = [
        ({"channel": "mail", "address": "a@example.jp"}, "lat"),
        ({"municipality": "999999", "channel": "mail", "address": "a@example.jp"}, "municipality"),
        (
            {"lat": 43.0, "lon": 140.0, "radius_m": 100, "channel": "mail", "address": "a@example.jp"},
            "lat/lon",
        ),
        ({"municipality": TENANT, "channel": "webhook", "address": "ftp://x"}, "address"),
        ({"municipality": TENANT, "recipient": "nobody"}, "recipient"),
    ]
    for data, field in cases:
        with pytest.raises((BadRequest, NotFound)) as err:
            subscriptions_of(p).create(TENANT, data)
        assert field in err.value.detail, (data, err.value.detail)
    assert subscriptions_of(p).list(TENANT) == []


def test_confirm_and_unsubscribe_by_token(bears_platform) -> None:
    p = bears_platform
    subs = subscriptions_of(p)
    made = subs.subscribe(
        TENANT,
        {"email": "hanako@example.jp", "municipality": TENANT},
        client="c1",
        base_url="https://x.example.jp",
    )
    assert not made["confirmed"] and matching(p) == set()
    with p.engine.connect() as conn:
        token = conn.execute(subs_mod.t.select().where(subs_mod.t.c.id == made["id"])).first().token
    assert subs.confirm(token)["confirmed"] and matching(p) == {made["recipient_id"]}
    assert subs.confirm(token)["confirmed"]  # opening the link twice is fine
    assert not subs.unsubscribe(token)["active"] and matching(p) == set()
    with pytest.raises(NotFound):
        subs.confirm("no-such-token-" + "x" * 20)


def test_pending_sign_ups_per_address_are_limited(bears_platform) -> None:
    p = bears_platform
    subs = subscriptions_of(p)
    for i in range(subs_mod.PENDING_PER_ADDRESS):
        subs.subscribe(
            TENANT,
            {"email": "victim@example.jp", "municipality": TENANT},
            client=f"c{i}",
            base_url="https://x.example.jp",
        )
    with pytest.raises(TooManyRequests) as err:
        subs.subscribe(
            TENANT,
            {"email": "victim@example.jp", "municipality": TENANT},
            client="c9",
            base_url="https://x.example.jp",
        )
    assert err.value.detail.startswith("email")
