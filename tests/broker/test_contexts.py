"""JSON-LD contexts: bundled core, preloaded suite contexts, hosted contexts, offline-safe remote lookups."""

from __future__ import annotations

from typing import Any

import pytest

from society5.broker.jsonld import CORE_CONTEXT_URL, ContextStore, parse_link_header

H = {"Content-Type": "application/json"}


def test_core_context_is_bundled_and_listed(client: Any) -> None:
    urls = client.get("/ngsi-ld/v1/jsonldContexts").json()
    assert CORE_CONTEXT_URL in urls
    r = client.get("/ngsi-ld/v1/jsonldContexts/" + CORE_CONTEXT_URL)
    assert r.status_code == 200 and "@context" in r.json()
    assert client.delete("/ngsi-ld/v1/jsonldContexts/" + CORE_CONTEXT_URL).status_code == 400


def test_hosted_context_roundtrip(client: Any) -> None:
    body = {
        "@context": {
            "level": "https://society5.example/terms#tankLevel",
            "Tank": "https://society5.example/terms#Tank",
        }
    }
    r = client.post("/ngsi-ld/v1/jsonldContexts", json=body, headers=H)
    assert r.status_code == 201
    url = r.headers["location"]
    assert client.get(url).json() == body
    link = f'<{url}>; rel="http://www.w3.org/ns/json-ld#context"; type="application/ld+json"'
    ent = {"id": "urn:ngsi-ld:Tank:1", "type": "Tank", "level": {"type": "Property", "value": 0.4}}
    assert client.post("/ngsi-ld/v1/entities", json=ent, headers=H | {"Link": link}).status_code == 201
    raw = client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Tank:1").json()
    assert raw["type"] == "https://society5.example/terms#Tank"
    assert "https://society5.example/terms#tankLevel" in raw
    assert (
        client.get("/ngsi-ld/v1/entities/urn:ngsi-ld:Tank:1", headers={"Link": link}).json()["level"]["value"]
        == 0.4
    )
    assert client.delete(url).status_code == 204
    assert client.get(url).status_code == 404


def test_unknown_remote_context_is_a_prompt_503(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prompt because nothing is fetched: a request that tried the internet would hang on a closed network."""
    import httpx

    tried: list[str] = []
    monkeypatch.setattr(httpx, "get", lambda url, **_kw: tried.append(url))
    link = '<https://unreachable.example.org/ctx.jsonld>; rel="http://www.w3.org/ns/json-ld#context"'
    r = client.post("/ngsi-ld/v1/entities", json={"id": "urn:x:1", "type": "T"}, headers=H | {"Link": link})
    assert tried == []
    assert r.status_code == 503
    assert r.json()["type"] == "https://uri.etsi.org/ngsi-ld/errors/LdContextNotAvailable"
    assert client.get("/ngsi-ld/v1/entities/urn:x:1").status_code == 404


def test_inline_context_in_ld_json_body(client: Any) -> None:
    ent = {"id": "urn:x:2", "type": "Bear", "@context": {"Bear": "https://society5.example/wildlife#Bear"}}
    r = client.post("/ngsi-ld/v1/entities", json=ent, headers={"Content-Type": "application/ld+json"})
    assert r.status_code == 201, r.text
    assert (
        client.get("/ngsi-ld/v1/entities/urn:x:2").json()["type"] == "https://society5.example/wildlife#Bear"
    )


def test_oversize_body_is_413_and_nothing_written(platform: Any) -> None:
    import dataclasses

    from fastapi.testclient import TestClient

    from society5.broker.service import service as broker_service
    from society5.web.app import create_app

    settings = platform.settings.model_copy(update={"max_body_bytes": 2048})
    small = dataclasses.replace(platform, settings=settings)
    with TestClient(create_app(small.settings, services=[broker_service], platform=small)) as c:
        big = {"id": "urn:x:big", "type": "T", "blob": {"type": "Property", "value": "x" * 5000}}
        r = c.post("/ngsi-ld/v1/entities", json=big, headers=H)
        assert r.status_code == 413
        assert c.get("/ngsi-ld/v1/entities/urn:x:big").status_code == 404


def test_expansion_and_compaction_rules() -> None:
    store = ContextStore()
    ctx = store.activate({"ex": "https://ex.org/ns#", "speed": "ex:speed"})
    assert ctx.expand("speed") == "https://ex.org/ns#speed"
    assert ctx.expand("ex:fuel") == "https://ex.org/ns#fuel"
    assert ctx.expand("other") == "https://uri.etsi.org/ngsi-ld/default-context/other"
    assert ctx.compact("https://ex.org/ns#speed") == "speed"
    assert ctx.compact("https://ex.org/ns#fuel") == "ex:fuel"
    assert ctx.compact("https://uri.etsi.org/ngsi-ld/default-context/other") == "other"
    assert (
        ctx.expand("observedAt") == "https://uri.etsi.org/ngsi-ld/observedAt"
    )  # core terms cannot be overridden
    assert (
        parse_link_header('<https://a/b.jsonld>; rel="http://www.w3.org/ns/json-ld#context"')
        == "https://a/b.jsonld"
    )
