"""HTTP: cameras, image uploads by device keys, who sees which image, drone detections, dispatch tasks."""

from __future__ import annotations

from pathlib import Path

import pytest

from society5.services.bears import cameras
from society5.services.bears.sightings import sightings_of

from .conftest import OTHER_TENANT, TENANT
from .images_support import CAMERA, SCRIPTED, ago, jpeg, scripted

H = {"NGSILD-Tenant": TENANT}


@pytest.fixture
def api(bears_client, tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    settings = bears_client.app.state.platform.settings
    monkeypatch.setattr(settings, "bears_dir", str(tmp_path / "bears"))
    monkeypatch.setattr(settings, "bears_classifier", SCRIPTED)
    return bears_client


def _upload(client, frame: bytes, headers=H, **fields):  # type: ignore[no-untyped-def]
    data = {"camera_id": "moiwa-01", **fields}
    return client.post("/bears/images", headers=headers, data=data,
                       files={"file": ("f.jpg", frame, "image/jpeg")})


def test_cameras_are_registered_listed_and_changed(api) -> None:  # type: ignore[no-untyped-def]
    r = api.post("/bears/cameras", headers=H, json=CAMERA)
    assert r.status_code == 201, r.text
    cam = r.json()
    assert cam["id"] == cameras.entity_id(TENANT, "moiwa-01") and cam["status"] == "installed"
    assert api.post("/bears/cameras", headers=H, json=CAMERA).status_code == 409
    bad = api.post("/bears/cameras", headers=H, json={**CAMERA, "key": "Bad Key"})
    assert bad.status_code == 400 and bad.json()["error"]["detail"].startswith("key:")
    sea = api.post("/bears/cameras", headers=H, json={**CAMERA, "key": "tokyo", "lat": 35.68, "lon": 139.76})
    assert sea.status_code == 400 and sea.json()["error"]["detail"].startswith("lat/lon:")
    assert [c["key"] for c in api.get("/bears/cameras", headers=H).json()] == ["moiwa-01"]
    assert api.get("/bears/cameras", headers={"NGSILD-Tenant": OTHER_TENANT}).json() == []
    r = api.patch("/bears/cameras/moiwa-01", headers=H, json={"status": "maintenance", "battery_level": 0.4})
    assert r.json()["status"] == "maintenance" and r.json()["battery_level"] == 0.4
    assert api.get("/bears/cameras/nope", headers=H).status_code == 404


def test_uploads_dedupe_list_and_serve_clean_files(api) -> None:  # type: ignore[no-untyped-def]
    api.post("/bears/cameras", headers=H, json=CAMERA)
    frame = jpeg(scripted("bear", 0.9, 1), gps=True)
    r = _upload(api, frame, taken_at=ago(60).isoformat(), battery_level="0.8")
    assert r.status_code == 201, r.text
    img = r.json()
    assert img["label"] == "bear" and img["sighting_id"] and "path" not in img
    assert _upload(api, frame, taken_at=ago(60).isoformat()).status_code == 200  # the same file again
    assert api.get("/bears/cameras/moiwa-01", headers=H).json()["recent"][0]["id"] == img["id"]
    listed = api.get("/bears/images", headers=H, params={"camera": "moiwa-01", "label": "bear"}).json()
    assert [i["id"] for i in listed] == [img["id"]]
    assert api.get("/bears/images", headers=H, params={"label": "empty"}).json() == []
    file = api.get(img["url"])
    assert file.status_code == 200 and file.headers["content-type"] == "image/jpeg"
    assert b"TrailCam" not in file.content and api.get(img["thumb_url"]).status_code == 200
    # One auto dispatch (0.9 ≥ BEARS_ALERT_THRESHOLD), then its lifecycle.
    [task] = api.get("/bears/dispatches", headers=H).json()
    assert task["status"] == "open" and task["image_id"] == img["id"]
    url = f"/bears/dispatches/{task['id']}"
    assert api.patch(url, headers=H, json={"status": "assigned"}).status_code == 400  # nobody named
    r = api.patch(url, headers=H, json={"status": "assigned", "assignee": "A班"})
    assert r.json()["status"] == "assigned"
    assert api.patch(url, headers=H, json={"status": "done"}).json()["status"] == "done"
    again = api.patch(url, headers=H, json={"status": "open"})
    assert again.status_code == 409 and again.json()["error"]["detail"].startswith("status:")
    assert api.get("/bears/dispatches", headers=H, params={"status": "open"}).json() == []
    assert api.get("/bears/dispatches", headers=H, params={"status": "flying"}).status_code == 400


def test_bad_uploads_are_4xx_naming_the_field(api) -> None:  # type: ignore[no-untyped-def]
    api.post("/bears/cameras", headers=H, json=CAMERA)
    frame = jpeg(scripted("empty", 0.9, 1))
    cases = [
        (api.post("/bears/images", headers=H, json={"camera_id": "moiwa-01"}), 415, "Content-Type:"),
        (api.post("/bears/images", headers=H, data={"camera_id": "moiwa-01"}, files={"x": ("a", b"1")}),
         400, "x:"),
        (_upload(api, frame, taken_at="yesterday"), 400, "taken_at:"),
        (_upload(api, frame), 400, "taken_at:"),
        (_upload(api, frame, taken_at=ago(5).isoformat(), battery_level="80"), 400, "battery_level:"),
        (_upload(api, b"GIF89a", taken_at=ago(5).isoformat()), 400, "file:"),
        (_upload(api, frame, camera_id="ghost", taken_at=ago(5).isoformat()), 400, "camera_id:"),
        (api.post("/bears/drone-detections", headers=H, data={"lat": "43.0"},
                  files={"file": ("f.jpg", frame, "image/jpeg")}), 400, "lat/lon:"),
    ]
    for r, status, field in cases:
        assert r.status_code == status, r.text
        assert r.json()["error"]["detail"].startswith(field), r.text
    assert api.get("/bears/images", headers=H).json() == []


def test_a_drone_detection_and_a_dispatch_from_a_sighting(api) -> None:  # type: ignore[no-untyped-def]
    r = api.post("/bears/drone-detections", headers=H,
                 data={"lat": "43.05", "lon": "141.30", "drone": "survey-2", "taken_at": ago(20).isoformat()},
                 files={"file": ("t.jpg", jpeg(scripted("bear", 0.7, 2)), "image/jpeg")})
    assert r.status_code == 201, r.text
    s = api.get(f"/bears/sightings/{r.json()['sighting_id']}", headers=H).json()
    assert s["source"] == "drone"
    task = api.post("/bears/dispatches", headers=H, json={"sighting_id": s["id"], "note": "再確認"})
    assert task.status_code == 201, task.text
    assert task.json()["lat"] == 43.05 and task.json()["image_id"] == r.json()["id"]
    from_image = api.post("/bears/dispatches", headers=H,
                          json={"image_id": r.json()["id"], "assignee": "B班"})
    assert from_image.json()["status"] == "assigned"
    assert api.post("/bears/dispatches", headers=H, json={}).status_code == 400
    assert api.post("/bears/dispatches", headers=H, json={"image_id": "nope"}).status_code == 400
    other = {"NGSILD-Tenant": OTHER_TENANT}
    assert api.get(f"/bears/dispatches/{task.json()['id']}", headers=other).status_code == 404


def test_who_may_post_and_see_images(api, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    platform = api.app.state.platform
    api.post("/bears/cameras", headers=H, json=CAMERA)
    monkeypatch.setattr(platform.settings, "auth", "on")
    cam_id = cameras.entity_id(TENANT, "moiwa-01")
    device = {**H, "Authorization": f"Bearer {platform.keys.create('device', TENANT, cam_id).key}"}
    foreign = {**H, "Authorization": f"Bearer {platform.keys.create('device', OTHER_TENANT, 'urn:').key}"}
    another = {**H, "Authorization": f"Bearer {platform.keys.create('device', TENANT, cam_id + 'x').key}"}
    staff = {**H, "Authorization": f"Bearer {platform.keys.create('operator', TENANT).key}"}
    other_staff = {"Authorization": f"Bearer {platform.keys.create('operator', OTHER_TENANT).key}"}
    frame = jpeg(scripted("bear", 0.7, 3))
    assert _upload(api, frame, headers=H, taken_at=ago(9).isoformat()).status_code == 401
    assert _upload(api, frame, headers=foreign, taken_at=ago(9).isoformat()).status_code == 403
    wrong = _upload(api, frame, headers=another, taken_at=ago(9).isoformat())
    assert wrong.status_code == 403 and wrong.json()["error"]["detail"].startswith("camera_id:")
    r = _upload(api, frame, headers=device, taken_at=ago(9).isoformat())
    assert r.status_code == 201, r.text
    img = r.json()
    person = _upload(api, jpeg(scripted("person", 0.9, 4)), headers=device,
                     taken_at=ago(200).isoformat()).json()
    assert api.get("/bears/images", headers=device).status_code == 403  # devices post, staff read
    # Staff of the tenant see everything; staff of another tenant and the public see nothing yet.
    assert api.get(img["url"], headers=staff).status_code == 200
    assert api.get(img["url"], headers=other_staff).status_code == 404
    assert api.get(img["url"]).status_code == 404 and api.get(img["thumb_url"]).status_code == 404
    sightings_of(platform).set_state(TENANT, img["sighting_id"], "verified", "staff")
    assert api.get(img["thumb_url"]).status_code == 200  # verified: public
    assert api.get(f"/bears/images/{img['id']}/info").status_code == 404  # metadata stays with staff
    assert api.get(person["url"]).status_code == 404
    assert api.get(person["url"], headers=staff).status_code == 200
