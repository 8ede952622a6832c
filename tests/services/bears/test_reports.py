"""Resident reports (POST /bears/reports): to the nearest municipality, checked, rate-limited, photos."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from society5.core.errors import BadRequest
from society5.services.bears import images, tables
from tests.services.bears.conftest import OTHER_TENANT, TENANT

SAPPORO_PT = {"lat": 43.023612, "lon": 141.322187}  # 札幌市中央区, near the city office
IWAMIZAWA_PT = {"lat": 43.196, "lon": 141.776}
OTARU_PT = {"lat": 43.19, "lon": 140.994}  # 小樽市: not a tenant in these tests


def report(**extra: Any) -> dict[str, Any]:
    return {**SAPPORO_PT, "kind": "sighting", "count": 2, "cubs": 1, **extra}


def staff_list(client: Any, tenant: str) -> list[dict[str, Any]]:
    return client.get("/bears/sightings", headers={"NGSILD-Tenant": tenant}).json()


def report_rows(platform: Any) -> list[dict[str, Any]]:
    with platform.engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(tables.reports)).mappings()]


def test_json_report_goes_to_the_nearest_municipality_as_unverified(bears_client, bears_platform) -> None:
    r = bears_client.post("/bears/reports", json=report(contact="090-0000-0000", area_name="円山公園"))
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["state"] == "unverified" and made["source"] == "resident"
    assert made["municipality"] == TENANT and made["count"] == 2 and made["cubs"] == 1
    assert made["lat"] == 43.024 and "contact" not in made  # the public view: rounded, nothing personal
    assert "受け付けました" in made["message"] and "unverified" in made["message_en"]
    # observed_at defaulted to now
    seen = datetime.fromisoformat(staff_list(bears_client, TENANT)[0]["observed_at"].replace("Z", "+00:00"))
    assert abs(datetime.now(UTC) - seen) < timedelta(minutes=1)
    assert [s["id"] for s in staff_list(bears_client, TENANT)] == [made["id"]]
    assert staff_list(bears_client, OTHER_TENANT) == []
    rows = report_rows(bears_platform)
    assert len(rows) == 1 and rows[0]["contact"] == "090-0000-0000" and rows[0]["tenant"] == TENANT
    assert "127.0.0.1" not in rows[0]["client"] and "testclient" not in rows[0]["client"]

    r = bears_client.post("/bears/reports", json={**IWAMIZAWA_PT, "kind": "trace", "trace": "dung",
                                                  "count": 0})
    assert r.status_code == 201 and r.json()["municipality"] == OTHER_TENANT


def test_form_report_without_photo_and_with_jst_time(bears_client) -> None:
    local = (datetime.now(UTC) + timedelta(hours=9) - timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M")
    form = {"lat": "43.023612", "lon": "141.322187", "kind": "sighting", "count": "1", "cubs": "0",
            "behaviour": "passing", "direction": "NE", "observed_at": local, "contact": "", "area_name": ""}
    r = bears_client.post("/bears/reports", data=form, files={"photo": ("", b"", "application/octet-stream")})
    assert r.status_code == 201, r.text
    stored = staff_list(bears_client, TENANT)[0]
    assert stored["behaviour"] == "passing" and "photo" not in stored
    expected = datetime.strptime(local, "%Y-%m-%dT%H:%M").replace(tzinfo=UTC) - timedelta(hours=9)
    assert stored["observed_at"].startswith(expected.strftime("%Y-%m-%dT%H:%M"))


def test_bad_input_names_the_field_and_writes_nothing(bears_client, bears_platform) -> None:
    cases = [
        (report(lat=41.0, lon=140.9), 400, "lat/lon", "北海道の外"),  # Aomori
        (report(lat=43.2, lon=140.3), 400, "lat/lon", "海上"),  # Sea of Japan
        (report(lat="north"), 400, "lat", None),
        (report(cubs=3, count=1), 400, "cubs", None),
        (report(kind="ufo"), 400, "kind", None),
        (report(source="staff"), 400, "source", None),  # residents cannot claim another source
        (report(state="verified"), 400, "state", None),
        (report(observed_at=(datetime.now(UTC) + timedelta(days=1)).isoformat()), 400, "observed_at", "未来"),
        (report(contact="a\x00b"), 400, "contact", None),
        ({"lon": 141.3}, 400, "lat", None),
    ]
    for body, status, field, words in cases:
        r = bears_client.post("/bears/reports", json=body)
        assert r.status_code == status, (body, r.text)
        detail = r.json()["error"]["detail"]
        assert detail.startswith(field), (body, detail)
        assert words is None or words in detail
    as_json = {"content-type": "application/json"}
    r = bears_client.post("/bears/reports", content=b"{not json", headers=as_json)
    assert r.status_code == 400 and r.json()["error"]["detail"].startswith("body")
    r = bears_client.post("/bears/reports", content=b"[1]", headers=as_json)
    assert r.status_code == 400
    r = bears_client.post("/bears/reports", content=b"lat=1", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    assert staff_list(bears_client, TENANT) == [] and report_rows(bears_platform) == []


def test_a_municipality_that_is_not_a_tenant_is_refused(bears_client, bears_platform) -> None:
    r = bears_client.post("/bears/reports", json=report(**OTARU_PT))
    assert r.status_code == 422
    detail = r.json()["error"]["detail"]
    assert detail.startswith("lat/lon") and "小樽市" in detail and "参加していません" in detail
    assert report_rows(bears_platform) == []


def test_a_flood_from_one_client_is_429_and_stores_no_photo(bears_client, bears_platform,
                                                            monkeypatch) -> None:
    stored: list[bytes] = []
    monkeypatch.setattr(images, "store_photo", lambda *a, **k: stored.append(a[2]) or {"id": "x"},
                        raising=False)
    limit = bears_platform.settings.bears_report_limit
    for _ in range(limit):
        assert bears_client.post("/bears/reports", json=report()).status_code == 201
    r = bears_client.post("/bears/reports", data={"lat": "43.0236", "lon": "141.3221"},
                          files={"photo": ("bear.jpg", b"\xff\xd8jpeg", "image/jpeg")})
    assert r.status_code == 429 and "110" in r.json()["error"]["detail"]
    assert stored == [] and len(staff_list(bears_client, TENANT)) == limit


def test_a_photo_is_stored_first_and_linked(bears_client, bears_platform, monkeypatch) -> None:
    calls: list[tuple[str, bytes, str]] = []

    def store_photo(platform: Any, tenant: str, data: bytes, *, source: str = "resident") -> dict[str, Any]:
        calls.append((tenant, data, source))
        return {"id": "3f0c8a2e-photo"}

    monkeypatch.setattr(images, "store_photo", store_photo, raising=False)
    r = bears_client.post("/bears/reports", data={"lat": "43.0236", "lon": "141.3221", "kind": "damage"},
                          files={"photo": ("bear.jpg", b"\xff\xd8 a jpeg", "image/jpeg")})
    assert r.status_code == 201, r.text
    assert calls == [(TENANT, b"\xff\xd8 a jpeg", "resident")]
    assert "photo" not in r.json()  # unverified: the public does not see the photo yet
    assert staff_list(bears_client, TENANT)[0]["photo"] == "3f0c8a2e-photo"


def test_a_bad_or_huge_photo_refuses_the_report(bears_client, bears_platform, monkeypatch) -> None:
    def refuse(*a: Any, **k: Any) -> dict[str, Any]:
        raise BadRequest("photo: not an image / 画像ではありません")

    monkeypatch.setattr(images, "store_photo", refuse, raising=False)
    r = bears_client.post("/bears/reports", data={"lat": "43.0236", "lon": "141.3221"},
                          files={"photo": ("x.jpg", b"not an image", "image/jpeg")})
    assert r.status_code == 400 and r.json()["error"]["detail"].startswith("photo")
    r = bears_client.post("/bears/reports", data={"lat": "43.0236", "lon": "141.3221"},
                          files={"other": ("x.jpg", b"x", "image/jpeg")})
    assert r.status_code == 400 and r.json()["error"]["detail"].startswith("other")
    big = b"\xff" * (bears_platform.settings.bears_max_image_mb * 2**20 + 1)
    r = bears_client.post("/bears/reports", data={"lat": "43.0236", "lon": "141.3221"},
                          files={"photo": ("x.jpg", big, "image/jpeg")})
    assert r.status_code == 413 and r.json()["error"]["detail"].startswith("photo")
    assert staff_list(bears_client, TENANT) == [] and report_rows(bears_platform) == []


def test_a_real_photo_is_stored_exif_free_and_shown_once_verified(bears_client, bears_platform, tmp_path,
                                                                  monkeypatch) -> None:
    from PIL import Image

    monkeypatch.setattr(bears_platform.settings, "bears_dir", str(tmp_path / "bears"))
    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (90, 110, 60)).save(buf, "JPEG")
    r = bears_client.post("/bears/reports", data={"lat": "43.0236", "lon": "141.3221"},
                          files={"photo": ("bear.jpg", buf.getvalue(), "image/jpeg")})
    assert r.status_code == 201, r.text
    made = r.json()
    assert "photo" not in made
    photo = staff_list(bears_client, TENANT)[0]["photo"]
    with bears_platform.engine.connect() as conn:
        row = conn.execute(sa.select(tables.images).where(tables.images.c.id == photo)).mappings().one()
    assert row["tenant"] == TENANT and row["source"] == "resident" and not row["public"]
    r = bears_client.post(f"/bears/sightings/{made['id']}/verify", json={"state": "verified"},
                          headers={"NGSILD-Tenant": TENANT})
    assert r.status_code == 200
    public = bears_client.get("/bears/sightings.geojson").json()["features"][0]["properties"]
    assert public["photo"] == photo
