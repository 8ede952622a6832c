"""CAP 1.2 (OASIS Common Alerting Protocol) documents of bear alerts, and an Atom feed of them.

Relays (broadcasters, Lアラート-style hubs) poll the feed and fetch each entry's CAP document. Each alert
is one message per version: the first is ``msgType`` Alert; a higher level later is an Update and a
rejected sighting a Cancel, both ``references`` the first. The feed lists the active alerts and, until
their original expiry, the cancelled ones, so a relay that already spread an alert also sees it
withdrawn. Locations are rounded like every public view (BEARS_PUBLIC_DECIMALS).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree as ET

from society5.core.timeutil import JST, parse_iso
from society5.services.bears.alerts import INSTRUCTION_EN, INSTRUCTION_JA

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
ATOM_NS = "http://www.w3.org/2005/Atom"
CAP_TYPE = "application/cap+xml"
ATOM_TYPE = "application/atom+xml"
SEVERITY = {1: "Moderate", 2: "Severe", 3: "Extreme"}
URGENCY = {1: "Expected", 2: "Immediate", 3: "Immediate"}
EVENT = {"ja-JP": "ヒグマ出没", "en-US": "Brown bear"}


def cap_time(text: str) -> str:
    """CAP's dateTime: seconds, an explicit offset (never ``Z``); shown in JST as people there read it."""
    return parse_iso(text).astimezone(JST).strftime("%Y-%m-%dT%H:%M:%S+09:00")


def sender(base_url: str) -> str:
    return f"bears@{urlsplit(base_url).hostname or 'localhost'}"


def identifier(row: dict[str, Any]) -> str:
    return row["id"] if row["version"] == 1 else f"{row['id']}.v{row['version']}"


def msg_type(row: dict[str, Any]) -> str:
    if row["status"] == "cancelled":
        return "Cancel"
    return "Alert" if row["version"] == 1 else "Update"


def cap_url(base_url: str, row: dict[str, Any]) -> str:
    return f"{base_url}/bears/alerts/{quote(row['id'], safe=':')}.cap"


def _sub(parent: ET.Element, tag: str, text: Any = None) -> ET.Element:
    el = ET.SubElement(parent, tag)
    if text is not None:
        el.text = str(text)
    return el


def document(row: dict[str, Any], base_url: str, decimals: int) -> bytes:
    """The CAP 1.2 XML of one alert row (UTF-8, with an XML declaration)."""
    ET.register_namespace("", CAP_NS)
    q = f"{{{CAP_NS}}}"
    info = row["info"]
    who = sender(base_url)
    kind = msg_type(row)
    root = ET.Element(q + "alert")
    _sub(root, q + "identifier", identifier(row))
    _sub(root, q + "sender", who)
    _sub(root, q + "sent", cap_time(row["issued_at"] if row["version"] == 1 else row["updated_at"]))
    _sub(root, q + "status", "Actual")
    _sub(root, q + "msgType", kind)
    _sub(root, q + "scope", "Public")
    if row["version"] > 1:
        _sub(root, q + "references", f"{who},{row['id']},{cap_time(row['issued_at'])}")
    lat, lon = round(row["lat"], decimals), round(row["lon"], decimals)
    area_ja = (
        " ".join(p for p in (info.get("municipality_name"), info.get("area_name")) if p) or info["place"]
    )
    texts = {
        "ja-JP": (info["headline_ja"], info["details_ja"], _instruction_ja(kind)),
        "en-US": (info["headline_en"], info["details_en"], _instruction_en(kind)),
    }
    for lang, (headline, details, instruction) in texts.items():
        el = _sub(root, q + "info")
        _sub(el, q + "language", lang)
        _sub(el, q + "category", "Safety")
        _sub(el, q + "event", EVENT[lang])
        _sub(el, q + "responseType", "AllClear" if kind == "Cancel" else "Avoid")
        _sub(el, q + "urgency", "Past" if kind == "Cancel" else URGENCY[row["level"]])
        _sub(el, q + "severity", "Minor" if kind == "Cancel" else SEVERITY[row["level"]])
        _sub(el, q + "certainty", "Unlikely" if kind == "Cancel" else info["certainty"])
        _sub(el, q + "onset", cap_time(info["observed_at"]))
        _sub(el, q + "expires", cap_time(row["expires_at"]))
        _sub(el, q + "senderName", info.get("municipality_name") or "北海道 Society 5.0")
        prefix = ("【取消】" if lang == "ja-JP" else "[Cancelled] ") if kind == "Cancel" else ""
        _sub(el, q + "headline", prefix + headline)
        observed = f"{info['time']} JST"
        if lang == "ja-JP":
            description = f"{observed}ごろ、{area_ja}でヒグマの{info['kind_ja']}情報がありました。\n{details}"
        else:
            description = f"Around {observed} a bear {info['kind_en']} was reported at {area_ja}.\n{details}"
        _sub(el, q + "description", description.strip())
        _sub(el, q + "instruction", instruction)
        _sub(el, q + "web", f"{base_url}/bears/?focus={quote(row['sighting_id'], safe=':')}")
        area = _sub(el, q + "area")
        _sub(
            area, q + "areaDesc", area_ja if lang == "ja-JP" else f"{area_ja} (radius {row['radius_m']:g} m)"
        )
        _sub(area, q + "circle", f"{lat},{lon} {row['radius_m'] / 1000:g}")
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _instruction_ja(kind: str) -> str:
    return "この情報は確認の結果、取り消されました。" if kind == "Cancel" else INSTRUCTION_JA


def _instruction_en(kind: str) -> str:
    return "This alert was cancelled after checking." if kind == "Cancel" else INSTRUCTION_EN


def feed(rows: list[dict[str, Any]], base_url: str, updated: str) -> bytes:
    """An Atom feed whose entries link to the CAP documents (newest first)."""
    ET.register_namespace("", ATOM_NS)
    q = f"{{{ATOM_NS}}}"
    root = ET.Element(q + "feed")
    _sub(root, q + "id", f"{base_url}/bears/alerts.cap")
    _sub(root, q + "title", "ヒグマ出没警報 / Brown bear alerts (CAP 1.2)")
    _sub(root, q + "updated", cap_time(max([updated, *(r["updated_at"] or r["issued_at"] for r in rows)])))
    ET.SubElement(root, q + "link", rel="self", href=f"{base_url}/bears/alerts.cap", type=ATOM_TYPE)
    author = _sub(root, q + "author")
    _sub(author, q + "name", "北海道 Society 5.0 データ連携基盤")
    for row in rows:
        info = row["info"]
        entry = _sub(root, q + "entry")
        _sub(entry, q + "id", f"{row['id']}#{row['version']}")
        kind = msg_type(row)
        _sub(entry, q + "title", ("【取消】" if kind == "Cancel" else "") + info["headline_ja"])
        _sub(entry, q + "updated", cap_time(row["updated_at"] or row["issued_at"]))
        _sub(entry, q + "summary", f"{info['headline_ja']} / {info['headline_en']} ({kind})")
        ET.SubElement(entry, q + "link", rel="alternate", href=cap_url(base_url, row), type=CAP_TYPE)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
