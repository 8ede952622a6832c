"""The CKAN HTTP envelope: GET/POST, tokens as CKAN clients send them, error types and status codes."""

from __future__ import annotations

from typing import Any

from .conftest import Ckan, Tokens


def test_envelope_get_and_aliases(ckan: Ckan, tokens: Tokens, orgs: Any) -> None:
    c = ckan.client
    assert c.get("/api/3").json() == {"version": 3}
    ckan.ok("package_create", tokens.sapporo, name="snow-removal", owner_org="sapporo", tags=["除雪"])
    body = c.get('/api/3/action/package_search?q=snow&facet.field=["tags"]&rows=5').json()
    assert body["success"] is True and body["help"] == "http://testserver/api/3/action/help_show?name=package_search"
    assert body["result"]["count"] == 1 and body["result"]["facets"] == {"tags": {"除雪": 1}}
    assert c.get("/api/action/package_show?id=snow-removal").json()["result"]["name"] == "snow-removal"
    assert c.get("/api/3/action/package_list").json()["result"] == ["snow-removal"]
    form = c.post("/api/3/action/package_show", data={"id": "snow-removal"})
    assert form.json()["result"]["name"] == "snow-removal"
    assert c.post("/api/3/action/site_read", content=b"").json()["result"] is True  # empty body: {}


def test_token_headers(ckan: Ckan, tokens: Tokens, orgs: Any) -> None:
    token = tokens.sapporo
    for n, headers in enumerate(({"Authorization": token}, {"Authorization": f"Bearer {token}"},
                                 {"X-CKAN-API-Key": token})):
        made = ckan.client.post("/api/3/action/package_create", headers=headers,
                                json={"name": f"ok-{n}", "owner_org": "sapporo"})
        assert made.status_code == 200, made.text


def test_errors_have_ckan_types_and_statuses(ckan: Ckan, tokens: Tokens, orgs: Any) -> None:
    c = ckan.client
    err = ckan.error(c.post("/api/3/action/no_such_action", json={}), 400, "Bad request - Action Error")
    assert "no_such_action" in err["message"]
    err = ckan.error(c.get("/api/3/action/package_create?name=x"), 400, "Bad request")
    assert "POST" in err["message"]
    ckan.error(c.post("/api/3/action/package_show", content=b"{not json",
                      headers={"Content-Type": "application/json"}), 400, "Bad request")
    ckan.error(c.post("/api/3/action/package_show", json=[1, 2]), 400, "Bad request")
    ckan.error(ckan.post("package_show", id="missing"), 404, "Not Found Error")
    err = ckan.error(ckan.post("package_show"), 409, "Validation Error")
    assert err["name"] == ["Missing value"]
    ckan.error(ckan.post("package_create", None, name="anon", owner_org="sapporo"), 403,
               "Authorization Error")
    err = ckan.error(ckan.post("package_create", "s5_0000_forged", name="x", owner_org="sapporo"), 403,
                     "Authorization Error")
    assert "not valid" in err["message"]
    ckan.error(ckan.post("package_search", fq="tags:(x"), 409, "Search Query Error")


BAD_BODIES: list[dict[str, Any]] = [
    {"name": None, "owner_org": "sapporo"}, {"name": ["x"], "owner_org": "sapporo"},
    {"name": "ok-name", "owner_org": {"id": 1}}, {"name": "ok-name", "owner_org": "sapporo", "tags": "防災"},
    {"name": "ok-name", "owner_org": "sapporo", "tags": [{"name": 5}]},
    {"name": "ok-name", "owner_org": "sapporo", "extras": "x"},
    {"name": "ok-name", "owner_org": "sapporo", "resources": [1, "x", {"url": 5}]},
    {"name": "ok-name", "owner_org": "sapporo", "spatial": {"type": "Polygon", "coordinates": "x"}},
    {"name": "ok-name", "owner_org": "sapporo", "spatial": [[1, 2], 3, 4, 5]},
    {"name": "ok-name", "owner_org": "sapporo", "groups": [{"name": ["a"]}]},
    {"name": "ok-name", "owner_org": "sapporo", "private": {"x": 1}},
    {"name": "ok-name", "owner_org": "sapporo", "temporal_start": 20250101},
]


def test_bad_input_is_a_4xx_never_a_500(ckan: Ckan, tokens: Tokens, orgs: Any) -> None:
    for body in BAD_BODIES:
        response = ckan.post("package_create", tokens.sapporo, **body)
        assert response.status_code == 409, (body, response.text)
        assert response.json()["error"]["__type"] == "Validation Error"
    assert ckan.ok("package_list") == []


def test_weird_search_parameters_are_4xx(ckan: Ckan) -> None:
    for params in ({"rows": [1]}, {"q": {"a": 1}}, {"sort": 5}, {"fq_list": "[1]"}, {"facet.limit": "x"},
                   {"include_private": "maybe"}):
        response = ckan.post("package_search", **params)
        assert response.status_code in (400, 409), (params, response.text)
