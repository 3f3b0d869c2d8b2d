"""``optistate serve``'s gate: the token on every request (header or login cookie), 401 otherwise, loopback hosts."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient
from test_web import LOCAL, SECRET, every_url, seeded

from optistate.web import create_app

TOKEN = "t0ken-for-the-dashboard-7f3a9c"


@pytest.fixture
def gated(store, served):
    seeded(store)
    return create_app(served, token=TOKEN)


def client(app, **kwargs):
    return TestClient(app, base_url="http://dashboard.example:8765", follow_redirects=False, **kwargs)


def test_without_the_token_every_route_answers_401(gated):
    with client(gated) as anonymous:
        for url, _ in every_url():
            response = anonymous.get(url)
            assert response.status_code == 401, url
            assert response.json() == {"error": "unauthorized: send Authorization: Bearer <token>"}
            assert response.headers["www-authenticate"] == 'Bearer realm="optistate"'
        for wrong in ("Bearer not-the-token", f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer"):
            assert anonymous.get("/metrics", headers={"Authorization": wrong}).status_code == 401, wrong
        assert anonymous.get("/api/agents", headers={"Cookie": f"optistate_session={TOKEN}"}).status_code == 401


def test_a_bearer_header_opens_every_route_metrics_included(gated):
    with client(gated, headers={"Authorization": f"Bearer {TOKEN}"}) as scraper:
        for url, status in every_url():
            assert scraper.get(url).status_code == status, url
        assert scraper.get("/metrics").text.startswith("# HELP optistate_agent_up")


def test_a_browser_signs_in_with_the_form_and_keeps_a_cookie_that_is_not_the_token(gated):
    with client(gated) as browser:
        page = browser.get("/agents/Cost Optimizer", headers={"Accept": "text/html"})
        assert page.status_code == 401 and '<form method="post" action="/login">' in page.text
        assert 'name="next" value="/agents/Cost Optimizer"' in page.text
        wrong = browser.post("/login", data={"token": "guess", "next": "/"})
        assert (wrong.status_code, "Wrong token." in wrong.text, "set-cookie" in wrong.headers) == (401, True, False)
        signed = browser.post("/login", data={"token": TOKEN, "next": "/agents/Cost Optimizer"})
        assert (signed.status_code, signed.headers["location"]) == (303, "/agents/Cost%20Optimizer")
        cookie = signed.headers["set-cookie"]
        assert cookie.startswith("optistate_session=") and "HttpOnly" in cookie and "SameSite=strict" in cookie
        for url, status in every_url():
            response = browser.get(url)
            assert response.status_code == status, url
            assert TOKEN not in response.text + str(response.headers) and SECRET not in response.text, url
        assert TOKEN not in cookie


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example"])
def test_the_login_form_redirects_only_within_the_server(gated, target):
    with client(gated) as browser:
        assert browser.post("/login", data={"token": TOKEN, "next": target}).headers["location"] == "/"


def test_without_a_token_only_loopback_host_names_are_answered(store, served):
    seeded(store)
    app = create_app(served)
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "127.0.0.1"):
        with TestClient(app, base_url=f"http://{host}") as local:
            assert local.get("/api/agents").status_code == 200, host
    for host in ("evil.example", "evil.example:8765", "127.0.0.1.evil.example", "[::2]:8765"):
        with TestClient(app, base_url=f"http://{host}") as rebound:
            response = rebound.get("/api/agents")
            assert response.status_code == 400 and SECRET not in response.text, host
    with TestClient(app, base_url=LOCAL) as local:
        assert local.get("/login").status_code == 404  # no form without a token


def test_every_response_carries_the_security_headers(gated):
    with client(gated) as anonymous, client(gated, headers={"Authorization": f"Bearer {TOKEN}"}) as scraper:
        for response in (anonymous.get("/"), scraper.get("/"), scraper.get("/nowhere"), scraper.get("/metrics")):
            assert response.headers["x-content-type-options"] == "nosniff"
            assert response.headers["content-security-policy"].startswith("default-src 'self'")
            assert response.headers["cache-control"] == "no-store"
