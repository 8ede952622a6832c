"""The watched folder and MQTT image notices (real Mosquitto on 127.0.0.1:1883, a local HTTP server)."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from society5.services.bears import background, cameras, images, mqtt_images
from society5.services.bears.watch import FolderWatcher

from .conftest import TENANT
from .images_support import CAMERA, SCRIPTED, ago, jpeg, scripted


@pytest.fixture
def plat(bears_platform, tmp_path: Path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(bears_platform.settings, "bears_dir", str(tmp_path / "bears"))
    monkeypatch.setattr(bears_platform.settings, "bears_classifier", SCRIPTED)
    cameras.create(bears_platform, TENANT, CAMERA)
    return bears_platform


def test_the_folder_ingests_complete_files_and_sorts_them(plat, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "drop"
    cam = root / TENANT / "moiwa-01"
    cam.mkdir(parents=True)
    (root / "999999" / "x").mkdir(parents=True)  # not a tenant: left alone
    (root / "999999" / "x" / "a.jpg").write_bytes(b"x")
    (cam / "with-exif.jpg").write_bytes(jpeg(scripted("bear", 0.9, 1), ago(3600)))
    no_time = cam / "no-exif.jpg"
    no_time.write_bytes(jpeg(scripted("empty", 0.9, 2)))
    stamp = time.time() - 7200
    os.utime(no_time, (stamp, stamp))
    (cam / "notes.txt").write_text("hello")
    (cam / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    ghost = root / TENANT / "ghost"
    ghost.mkdir()
    (ghost / "g.jpg").write_bytes(jpeg(scripted("empty", 0.9, 3), ago(60)))

    watcher = FolderWatcher(plat, root, settle_s=0)
    assert watcher.scan() == 0  # first sight: a file still being written looks the same
    assert watcher.scan() == 5
    assert sorted(p.name for p in (cam / "done").iterdir()) == ["no-exif.jpg", "with-exif.jpg"]
    failed = sorted(p.name for p in (cam / "failed").iterdir())
    assert failed == ["broken.jpg", "broken.jpg.txt", "notes.txt", "notes.txt.txt"]
    assert "file:" in (cam / "failed" / "broken.jpg.txt").read_text()
    assert "camera_id:" in (ghost / "failed" / "g.jpg.txt").read_text()
    assert (root / "999999" / "x" / "a.jpg").exists()
    stored = {i["label"]: i for i in images.list_images(plat, TENANT)}
    assert stored["bear"]["source"] == "folder" and stored["bear"]["sighting_id"]
    # Without EXIF the file's modification time is the capture time.
    assert abs(stamp - _epoch(stored["empty"]["taken_at"])) < 1
    assert watcher.scan() == 0


def _epoch(text: str) -> float:
    from society5.core.timeutil import parse_iso

    return parse_iso(text).timestamp()


def test_a_file_still_growing_waits(plat, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cam = tmp_path / "drop" / TENANT / "moiwa-01"
    cam.mkdir(parents=True)
    data = jpeg(scripted("empty", 0.9, 4), ago(60))
    (cam / "f.jpg").write_bytes(data[:100])
    watcher = FolderWatcher(plat, tmp_path / "drop", settle_s=0)
    watcher.scan()
    (cam / "f.jpg").write_bytes(data)  # the upload went on
    assert watcher.scan() == 0
    assert watcher.scan() == 1 and (cam / "done" / "f.jpg").exists()


class _Images(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}

    def do_GET(self) -> None:
        body = self.files.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_server():  # type: ignore[no-untyped-def]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _wait(check, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_notices_over_mqtt_are_fetched_and_ingested(plat, http_server: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    prefix = f"t{uuid.uuid4().hex[:8]}"  # this test's own topics on the shared Mosquitto
    monkeypatch.setattr(plat.settings, "mqtt_url", "mqtt://127.0.0.1:1883")
    monkeypatch.setattr(plat.settings, "mqtt_topic_prefix", prefix)
    monkeypatch.setattr(plat.settings, "mqtt_client_id", f"test-{prefix}")
    _Images.files = {"/cam/1.jpg": jpeg(scripted("bear", 0.9, 5), ago(30))}
    running = background.start(plat)
    subscriber = running.parts[0]
    assert isinstance(subscriber, mqtt_images.ImageSubscriber)
    try:
        assert subscriber.subscribed.wait(10)
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{prefix}")
        pub.connect("127.0.0.1", 1883)
        pub.loop_start()
        topic = f"{prefix}-bears/{TENANT}/moiwa-01/image"
        for bad in (b"not json", json.dumps({"url": "ftp://127.0.0.1/x.jpg"}).encode(),
                    json.dumps({"url": f"{http_server}/missing.jpg"}).encode()):
            pub.publish(topic, bad, qos=1).wait_for_publish(5)
        pub.publish(f"{prefix}-bears/{TENANT}/nocam/image", json.dumps({"url": f"{http_server}/cam/1.jpg"}),
                    qos=1).wait_for_publish(5)
        pub.publish(topic, json.dumps({"url": f"{http_server}/cam/1.jpg"}), qos=1).wait_for_publish(5)
        [img] = _wait(lambda: images.list_images(plat, TENANT))
        assert img["source"] == "mqtt" and img["label"] == "bear" and img["sighting_id"]
        assert _wait(lambda: subscriber.stats["failed"] == 4 and subscriber.stats["stored"] == 1)
        pub.loop_stop()
        pub.disconnect()
    finally:
        running.stop()


def test_parse_notice_says_what_is_wrong() -> None:
    notice = b'{"url": "https://gw.example/1.jpg", "taken_at": "2026-01-02T03:04:05"}'
    ok = mqtt_images.parse_notice("s5-bears/011002/cam-1/image", notice, "s5")
    assert ok[:3] == ("011002", "cam-1", "https://gw.example/1.jpg")
    assert ok[3].utcoffset().total_seconds() == 9 * 3600  # no offset: JST
    for topic, payload, text in [
        ("s5/011002/cam-1/image", b"{}", "expected"),
        ("s5-bears/011002/Cam 1/image", b"{}", "camera key"),
        ("s5-bears/011002/cam-1/image", b"[]", "url"),
        ("s5-bears/011002/cam-1/image", b'{"url": "file:///etc/passwd"}', "http"),
        ("s5-bears/011002/cam-1/image", b'{"url": "http://x/1.jpg", "taken_at": "soon"}', "taken_at"),
        ("s5-bears/011002/cam-1/image", b"x" * 5000, "bytes"),
    ]:
        with pytest.raises(mqtt_images.Notice, match=text):
            mqtt_images.parse_notice(topic, payload, "s5")


def test_nothing_configured_starts_nothing(plat) -> None:  # type: ignore[no-untyped-def]
    running = background.start(plat)
    assert running.parts == []
    running.stop()
