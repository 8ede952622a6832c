"""The demo content: Hokkaido's 179 municipalities as tenants, live sensors, a staff login; re-runnable."""

from __future__ import annotations

from pathlib import Path

from society5.core.platform import Platform
from society5.core.regions import hokkaido_municipalities
from society5.core.service import Service
from society5.demo import DEMO_PASSWORD, DEMO_USER, SITES, load_demo, simulate_services, tick
from tests.conftest import make_settings


def test_municipality_list_is_complete() -> None:
    munis = hokkaido_municipalities()
    assert len(munis) == 179
    sapporo = next(m for m in munis if m.code == "011002")
    assert sapporo.name == "札幌市" and 43 < (sapporo.lat or 0) < 43.2
    assert all(m.code.startswith("01") and m.lat is not None for m in munis)


def test_load_demo_twice_and_tick(tmp_path: Path) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'demo.db'}", demo=True,
                             opendata_dir=str(tmp_path / "opendata"))
    first = load_demo(settings)
    second = load_demo(settings)  # idempotent apart from issuing another key
    assert first["key"] != second["key"]
    plat = Platform.open(settings)
    try:
        assert len(plat.tenants.list()) == 179
        assert plat.users.authenticate(DEMO_USER, DEMO_PASSWORD) is not None
        from society5.broker.service import start

        broker = start(plat)
        for code in SITES:
            kinds = {
                e["type"]
                for e in broker.find(code, type="Device,WeatherObserved,Vehicle,RoadSegment", fmt="keyValues")
            }
            assert kinds == {"Device", "WeatherObserved", "Vehicle", "RoadSegment"}
        before = broker.get("011002", "urn:ngsi-ld:CrowdFlowObserved:sapporo-chikaho-01")
        tick(plat)
        after = broker.get("011002", "urn:ngsi-ld:CrowdFlowObserved:sapporo-chikaho-01")
        assert after["peopleCount"]["observedAt"] > before["peopleCount"]["observedAt"]
        public = broker.find("011002", type="CrowdFlowObserved", fmt="keyValues")
        assert len(public) == 4 and all(e["scope"] == "/public" for e in public)
        # the bears service's cameras and past sightings, once (the second load added none)
        from society5.services.bears.demo_content import CAMERAS, SIGHTINGS

        cameras = broker.find("011002", type="CameraTrap", fmt="keyValues")
        assert len(cameras) == sum(1 for c in CAMERAS if c[0] == "011002")
        sightings = broker.find("011002", type="BearSighting", fmt="keyValues")
        assert len(sightings) == sum(1 for s in SIGHTINGS if s["tenant"] == "011002")
    finally:
        plat.close()


def test_services_simulate_hooks_run_in_demo_mode_only(tmp_path: Path, monkeypatch) -> None:
    import society5.demo as demo

    calls: list[str] = []

    def broken(_platform: object) -> None:
        calls.append("broken")
        raise RuntimeError("a broken simulation")

    hooks = (Service(name="first", title="1", simulate=broken),
             Service(name="second", title="2", simulate=lambda _p: calls.append("second")))
    monkeypatch.setattr(demo, "_simulated", lambda: hooks)
    plat = Platform.open(make_settings(f"sqlite:///{tmp_path / 'sim.db'}"))
    try:
        simulate_services(plat)
        assert calls == []  # not the demo
        plat.settings = plat.settings.model_copy(update={"demo": True})
        simulate_services(plat)
        assert calls == ["broken", "second"]  # one failing hook does not stop the next
    finally:
        plat.close()
