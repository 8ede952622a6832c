"""Demo content: Hokkaido's municipalities as tenants and a few live sensors of each kind the services use.

Everything is simulated and labelled as such (``source: "society5 demo simulation"``). ``tick`` moves the
values on, so pages and subscriptions show a platform that is alive; ``simulate_services`` runs each installed
service's own ``simulate`` hook (the bears service's cameras and residents), which paces itself.
"""

from __future__ import annotations

import logging
import math
import random
from datetime import timedelta
from functools import lru_cache
from typing import Any

from rich.progress import Progress

from society5.core.platform import Platform
from society5.core.regions import hokkaido_municipalities
from society5.core.service import Job, Service, discover
from society5.core.settings import Settings
from society5.core.timeutil import now_iso

log = logging.getLogger(__name__)

DEMO_USER, DEMO_PASSWORD = "demo", "hokkaido-demo"
SOURCE = "society5 demo simulation"
PUBLIC = "/public"
SITES = {  # tenant code → (lat, lon) of the demo sensors' centre
    "011002": (43.0621, 141.3544),  # 札幌市
    "012106": (43.1961, 141.7759),  # 岩見沢市
    "012262": (43.4913, 141.9036),  # 砂川市
    "013030": (43.2236, 141.5171),  # 当別町
    "016390": (42.6392, 143.1889),  # 更別村
}


def _point(lat: float, lon: float) -> dict[str, Any]:
    return {"type": "Point", "coordinates": [round(lon, 6), round(lat, 6)]}


def _near(rng: random.Random, lat: float, lon: float, km: float) -> tuple[float, float]:
    d = km * math.sqrt(rng.random()) / 111.0
    a = rng.random() * 2 * math.pi
    return lat + d * math.sin(a), lon + d * math.cos(a) / math.cos(math.radians(lat))


def demo_entities(code: str, rng: random.Random) -> list[dict[str, Any]]:
    lat, lon = SITES[code]
    now = now_iso()
    ents: list[dict[str, Any]] = [
        {
            "id": f"urn:ngsi-ld:WeatherObserved:{code}-01",
            "type": "WeatherObserved",
            "scope": PUBLIC,
            "name": "気象観測点",
            "location": _point(lat, lon),
            "source": SOURCE,
            "temperature": {"value": round(rng.uniform(-12, 2), 1), "unitCode": "CEL", "observedAt": now},
            "snowHeight": {"value": round(rng.uniform(20, 120)), "unitCode": "CMT", "observedAt": now},
            "relativeHumidity": {"value": round(rng.uniform(0.6, 0.95), 2), "observedAt": now},
        }
    ]
    for i in range(1, 3):
        plat, plon = _near(rng, lat, lon, 3)
        ents.append(
            {
                "id": f"urn:ngsi-ld:RoadSegment:{code}-{i:02d}",
                "type": "RoadSegment",
                "scope": PUBLIC,
                "name": f"除雪路線 {i}",
                "source": SOURCE,
                "location": {
                    "type": "LineString",
                    "coordinates": [
                        [round(plon, 6), round(plat, 6)],
                        [round(plon + 0.01, 6), round(plat + 0.004, 6)],
                    ],
                },
                "snowRemovalStatus": {
                    "value": rng.choice(["done", "scheduled", "inProgress"]),
                    "observedAt": now,
                },
            }
        )
        vlat, vlon = _near(rng, lat, lon, 4)
        ents.append(
            {
                "id": f"urn:ngsi-ld:Vehicle:{code}-plow-{i:02d}",
                "type": "Vehicle",
                "scope": PUBLIC,
                "vehicleType": "snowPlow",
                "name": f"除雪車 {i}号",
                "source": SOURCE,
                "location": {"value": _point(vlat, vlon), "observedAt": now},
                "speed": {"value": round(rng.uniform(0, 25), 1), "unitCode": "KMH", "observedAt": now},
            }
        )
    for i in range(1, 4):
        tlat, tlon = _near(rng, lat, lon, 6)
        ents.append(
            {
                "id": f"urn:ngsi-ld:Device:{code}-tank-{i:02d}",
                "type": "Device",
                "category": "sensor",
                "controlledProperty": "fillingLevel",
                "name": f"灯油タンク {i}",
                "source": SOURCE,
                "location": _point(tlat, tlon),
                "fillingLevel": {"value": round(rng.uniform(0.15, 0.95), 2), "observedAt": now},
                "capacity": {"value": 490, "unitCode": "LTR"},
            }
        )
        hlat, hlon = _near(rng, lat, lon, 5)
        ents.append(
            {
                "id": f"urn:ngsi-ld:Device:{code}-power-{i:02d}",
                "type": "Device",
                "category": "meter",
                "controlledProperty": "power",
                "name": f"見守り電力センサー {i}",
                "source": SOURCE,
                "location": _point(hlat, hlon),
                "power": {"value": round(rng.uniform(80, 1800)), "unitCode": "WTT", "observedAt": now},
            }
        )
        clat, clon = _near(rng, lat, lon, 8)
        ents.append(
            {
                "id": f"urn:ngsi-ld:Device:{code}-camera-{i:02d}",
                "type": "Device",
                "category": "camera",
                "controlledProperty": "wildlife",
                "name": f"自動撮影カメラ {i}",
                "source": SOURCE,
                "location": _point(clat, clon),
                "batteryLevel": {"value": round(rng.uniform(0.3, 1.0), 2), "observedAt": now},
                "deviceState": "ok",
            }
        )
    if code == "011002":
        for i, (name, dlat, dlon) in enumerate(
            [
                ("大通", 0.0, 0.0),
                ("さっぽろ", 0.0066, 0.0),
                ("すすきの", -0.0066, 0.0005),
                ("チ・カ・ホ中央", 0.0035, -0.0004),
            ],
            1,
        ):
            ents.append(
                {
                    "id": f"urn:ngsi-ld:CrowdFlowObserved:sapporo-chikaho-{i:02d}",
                    "type": "CrowdFlowObserved",
                    "scope": PUBLIC,
                    "name": f"地下歩行空間 {name}",
                    "source": SOURCE,
                    "location": _point(43.0607 + dlat, 141.3545 + dlon),
                    "peopleCount": {"value": rng.randint(50, 900), "observedAt": now},
                    "direction": "inbound",
                }
            )
        ents.append(
            {
                "id": "urn:ngsi-ld:Vehicle:011002-bus-01",
                "type": "Vehicle",
                "scope": PUBLIC,
                "vehicleType": "minibus",
                "name": "デマンドバス 1号",
                "source": SOURCE,
                "location": {"value": _point(*_near(rng, lat, lon, 3)), "observedAt": now},
            }
        )
    if code == "016390":
        for i in range(1, 4):
            plat, plon = _near(rng, lat, lon, 4)
            ring = [
                [plon, plat],
                [plon + 0.006, plat],
                [plon + 0.006, plat + 0.004],
                [plon, plat + 0.004],
                [plon, plat],
            ]
            ents.append(
                {
                    "id": f"urn:ngsi-ld:AgriParcel:016390-{i:02d}",
                    "type": "AgriParcel",
                    "scope": PUBLIC,
                    "name": f"圃場 {i}",
                    "source": SOURCE,
                    "location": {
                        "type": "Polygon",
                        "coordinates": [[[round(x, 6), round(y, 6)] for x, y in ring]],
                    },
                    "cropType": rng.choice(["小麦", "てん菜", "ばれいしょ", "大豆"]),
                    "area": {"value": 24000, "unitCode": "MTK"},
                }
            )
    return ents


def load_demo(settings: Settings, progress: bool = False) -> dict[str, str]:
    """Create the demo tenants, sensors, staff login and an admin key. Safe to run again."""
    from society5.broker.service import start

    plat = Platform.open(settings)
    broker = start(plat)
    munis = hokkaido_municipalities()
    rng = random.Random(5)
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("北海道の市町村 / municipalities", total=len(munis) + len(SITES))
        for m in munis:
            plat.tenants.ensure(m.code, name=m.name, name_en=m.kana, lat=m.lat, lon=m.lon)
            bar.advance(task)
        for code in SITES:
            broker.upsert(code, demo_entities(code, rng), mode="update")
            bar.advance(task)
        # The open-data portal's organizations, categories, datasets and broker-fed publishers.
        from society5.opendata.demo_content import load as load_opendata

        opendata = bar.add_task("オープンデータ / open data", total=1)
        load_opendata(plat)
        bar.advance(opendata)
        # The bears service's cameras, past sightings, alert subscribers and its open data.
        from society5.services.bears.demo_content import load as load_bears

        bears = bar.add_task("ヒグマ出没情報 / bear sightings", total=1)
        load_bears(plat)
        bar.advance(bears)
    plat.users.create(DEMO_USER, DEMO_PASSWORD, "admin", None, "デモ管理者")
    plat.users.create("sapporo", DEMO_PASSWORD, "operator", "011002", "札幌市 職員")
    key = plat.keys.create("admin", label="demo").key
    plat.close()
    return {"user": DEMO_USER, "password": DEMO_PASSWORD, "key": key}


def tick(platform: Platform) -> None:
    """Move the simulated sensors on (only in demo mode)."""
    if not platform.settings.demo:
        return
    broker = platform.parts.get("broker")
    if broker is None:
        return
    rng = random.Random()
    now = now_iso()
    for code in SITES:
        updates: list[dict[str, Any]] = [
            {
                "id": f"urn:ngsi-ld:WeatherObserved:{code}-01",
                "type": "WeatherObserved",
                "temperature": {"value": round(rng.uniform(-12, 2), 1), "unitCode": "CEL", "observedAt": now},
            }
        ]
        for i in range(1, 4):
            updates.append(
                {
                    "id": f"urn:ngsi-ld:Device:{code}-power-{i:02d}",
                    "type": "Device",
                    "power": {"value": round(rng.uniform(80, 1800)), "unitCode": "WTT", "observedAt": now},
                }
            )
        if code == "011002":
            for i in range(1, 5):
                updates.append(
                    {
                        "id": f"urn:ngsi-ld:CrowdFlowObserved:sapporo-chikaho-{i:02d}",
                        "type": "CrowdFlowObserved",
                        "peopleCount": {"value": rng.randint(50, 900), "observedAt": now},
                    }
                )
        broker.upsert(code, updates, mode="update")


@lru_cache(maxsize=1)
def _simulated() -> tuple[Service, ...]:
    return tuple(svc for svc in discover() if svc.simulate is not None)


def simulate_services(platform: Platform) -> None:
    """Run every installed service's ``simulate`` hook (only in demo mode). Each hook paces itself and does
    nothing when its service is not part of the running app."""
    if not platform.settings.demo:
        return
    for svc in _simulated():
        try:
            svc.simulate(platform)  # type: ignore[misc]
        except Exception:  # one service's simulation must not stop the others'
            log.exception("the %s service's demo simulation failed", svc.name)


service = Service(
    name="demo",
    title="デモデータ",
    title_en="Demo data",
    listed=False,
    jobs=(Job("simulate", timedelta(seconds=15), tick),
          Job("simulate_services", timedelta(seconds=5), simulate_services)),
)
