"""CAP 1.2 documents and the Atom feed of bear alerts: structure, namespaces, Alert / Update / Cancel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from xml.etree import ElementTree as ET

from society5.services.bears import alerts, cap
from society5.services.bears.sightings import sightings_of
from tests.services.bears.conftest import TENANT

NS = {"cap": cap.CAP_NS, "atom": cap.ATOM_NS}
BASE = "https://bears.example.jp"
HEADER = ("identifier", "sender", "sent", "status", "msgType", "scope")
INFO = (
    "language",
    "category",
    "event",
    "urgency",
    "severity",
    "certainty",
    "expires",
    "headline",
    "description",
    "instruction",
    "area",
)


def raised(p: Any, **extra: Any) -> dict[str, Any]:
    when = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    s = sightings_of(p).create(
        TENANT,
        {"observed_at": when, "lat": 43.023612, "lon": 141.322187, "area_name": "藻岩山麓", **extra},
        state="verified",
    )
    return alerts.one(p, alerts.alert_id(TENANT, s["id"])) | {"sighting": s}


def parse(row: dict[str, Any]) -> ET.Element:
    xml = cap.document(row, BASE, 3)
    assert xml.startswith(b"<?xml version='1.0' encoding='utf-8'?>")
    root = ET.fromstring(xml)
    assert root.tag == f"{{{cap.CAP_NS}}}alert"
    # Elements in the order the CAP 1.2 schema requires.
    names = [child.tag.split("}")[1] for child in root]
    assert names[:6] == list(HEADER)
    return root


def text(el: ET.Element, path: str) -> str:
    found = el.find(path, NS)
    assert found is not None and found.text, path
    return found.text


def test_alert_document_is_valid_cap(bears_platform) -> None:
    row = raised(bears_platform, behaviour="approaching", count=2, cubs=1)
    root = parse(row)
    assert text(root, "cap:identifier") == row["id"]
    assert text(root, "cap:sender") == "bears@bears.example.jp"
    assert text(root, "cap:status") == "Actual" and text(root, "cap:msgType") == "Alert"
    assert text(root, "cap:scope") == "Public" and root.find("cap:references", NS) is None
    assert text(root, "cap:sent").endswith("+09:00") and "Z" not in text(root, "cap:sent")
    infos = root.findall("cap:info", NS)
    assert [text(i, "cap:language") for i in infos] == ["ja-JP", "en-US"]
    for info in infos:
        names = [c.tag.split("}")[1] for c in info]
        assert all(n in names for n in INFO)
        assert names.index("category") < names.index("event") < names.index("urgency") < names.index("area")
        assert text(info, "cap:category") == "Safety"
        assert text(info, "cap:severity") == "Extreme" and text(info, "cap:urgency") == "Immediate"
        assert text(info, "cap:certainty") == "Observed"
        lat_lon, radius = text(info, "cap:area/cap:circle").split(" ")
        assert lat_lon == "43.024,141.322" and float(radius) == 2.0  # rounded like every public view
        assert "藻岩山麓" in text(info, "cap:area/cap:areaDesc")
    ja, en = infos
    assert "近づかない" in text(ja, "cap:instruction") and "110" in text(en, "cap:instruction")
    assert "子グマ1頭" in text(ja, "cap:description")
    assert text(ja, "cap:web") == f"{BASE}/bears/?focus={row['sighting_id']}"


def test_update_and_cancel_reference_the_first_message(bears_platform) -> None:
    p = bears_platform
    row = raised(p)
    first_sent = text(parse(row), "cap:sent")
    sightings_of(p).update(TENANT, row["sighting_id"], {"kind": "injury"})
    updated = parse(alerts.one(p, row["id"]))
    assert text(updated, "cap:msgType") == "Update"
    assert text(updated, "cap:identifier") == f"{row['id']}.v2"
    assert text(updated, "cap:references") == f"bears@bears.example.jp,{row['id']},{first_sent}"
    sightings_of(p).set_state(TENANT, row["sighting_id"], "rejected", "staff")
    cancelled = parse(alerts.one(p, row["id"]))
    assert text(cancelled, "cap:msgType") == "Cancel" and text(cancelled, "cap:identifier").endswith(".v3")
    assert text(cancelled, "cap:info/cap:responseType") == "AllClear"


def test_feed_lists_active_and_withdrawn_alerts(bears_platform) -> None:
    p = bears_platform
    one, two = raised(p), raised(p, lat=43.03)
    sightings_of(p).set_state(TENANT, two["sighting_id"], "rejected", "staff")
    feed = ET.fromstring(cap.feed(alerts.active(p, with_cancelled=True), BASE, "2026-01-01T00:00:00.000000Z"))
    assert feed.tag == f"{{{cap.ATOM_NS}}}feed"
    for needed in ("atom:id", "atom:title", "atom:updated", "atom:author/atom:name"):
        assert feed.find(needed, NS) is not None
    entries = feed.findall("atom:entry", NS)
    links = {e.find("atom:link", NS).get("href"): e for e in entries}  # type: ignore[union-attr]
    assert set(links) == {cap.cap_url(BASE, one), cap.cap_url(BASE, two)}
    assert all(e.find("atom:link", NS).get("type") == cap.CAP_TYPE for e in entries)  # type: ignore[union-attr]
    assert "【取消】" in text(links[cap.cap_url(BASE, two)], "atom:title")
