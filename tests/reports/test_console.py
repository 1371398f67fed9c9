"""The console over real HTTP: login with a token, the session cookie, CSRF, roles,
languages (the admin API in a thread, httpx as the browser)."""

from __future__ import annotations

import re

import httpx

from reports.session import CSRF_COOKIE, SESSION_COOKIE
from tests.reports.conftest import ApiThread


def login(api: ApiThread, token: str) -> httpx.Client:
    """A client logged in through the form, as a browser would be."""
    client = httpx.Client(base_url=api.url, timeout=10)
    form = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    r = client.post("/login", data={"token": token, "csrf": csrf.group(1), "next": "/review"})
    assert r.status_code == 303 and r.headers["Location"] == "/review"
    return client


def page_csrf(client: httpx.Client, path: str = "/review") -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert found is not None
    return found.group(1)


def test_pages_need_login_and_cookies_are_strict(api: ApiThread) -> None:
    r = httpx.get(f"{api.url}/review", timeout=10)
    assert r.status_code == 303 and r.headers["Location"].startswith("/login?next=")
    client = login(api, api.create_token("viewer", "parent"))
    page = client.get("/review")
    assert page.status_code == 200
    assert "Signed in as parent (viewer)" in page.text and 'aria-current=page' in page.text
    cookies = client.get("/login").headers.get_list("set-cookie")
    assert all("HttpOnly" in c and "SameSite=Strict" in c for c in cookies)
    assert client.cookies.get(SESSION_COOKIE) and client.cookies.get(CSRF_COOKIE)


def test_wrong_token_and_missing_csrf_are_refused(api: ApiThread) -> None:
    client = httpx.Client(base_url=api.url, timeout=10)
    csrf = page_csrf(client, "/login")
    bad = client.post("/login", data={"token": "fdns_nope", "csrf": csrf})
    assert bad.status_code == 401 and "Unknown or revoked token." in bad.text
    forged = client.post("/login", data={"token": api.create_token(), "csrf": "other"})
    assert forged.status_code == 403
    assert client.cookies.get(SESSION_COOKIE) is None


def test_session_changes_need_the_csrf_value(api: ApiThread) -> None:
    client = login(api, api.create_token("admin", "teacher"))
    # The session authenticates reads without a header...
    assert client.get("/api/whoami").json()["role"] == "admin"
    # ...but a change without the CSRF value is refused, and accepted with it.
    assert client.post("/api/reload").status_code == 403
    ok = client.post("/api/reload", headers={"X-CSRF-Token": page_csrf(client)})
    assert ok.status_code == 200
    # Logging out ends the session.
    assert client.post("/logout", data={"csrf": page_csrf(client)}).status_code == 303
    assert client.get("/api/whoami").status_code == 401


def test_viewer_may_look_but_not_change(api: ApiThread) -> None:
    client = login(api, api.create_token("viewer", "parent"))
    assert client.get("/api/check", params={"name": "example.com"}).status_code == 200
    assert client.get("/api/reports").status_code == 403
    csrf = {"X-CSRF-Token": page_csrf(client)}
    assert client.post("/api/reload", headers=csrf).status_code == 403


def test_check_box_and_french(api: ApiThread) -> None:
    client = login(api, api.create_token("viewer", "parent"))
    page = client.get("/check", params={"name": "example.com", "lang": "fr"})
    assert page.status_code == 200 and '<html lang="fr">' in page.text
    assert "Verdict pour example.com" in page.text and "absent des listes" in page.text
    # The choice sticks; Accept-Language decides otherwise.
    assert "Vue d&#x27;ensemble" in client.get("/review").text
    other = login(api, api.create_token("viewer", "b"))
    assert '<html lang="fr">' in other.get("/review", headers={"Accept-Language": "fr"}).text
    assert '<html lang="en">' in other.get("/review").text


def test_login_does_not_redirect_off_site(api: ApiThread) -> None:
    client = httpx.Client(base_url=api.url, timeout=10)
    csrf = page_csrf(client, "/login")
    r = client.post(
        "/login", data={"token": api.create_token(), "csrf": csrf, "next": "//evil.example/"}
    )
    assert r.status_code == 303 and r.headers["Location"] == "/"


def test_unreadable_forms_are_400_not_500(api: ApiThread) -> None:
    headers = {"Content-Type": "multipart/form-data"}  # no boundary
    for path in ("/login", "/logout"):
        r = httpx.post(f"{api.url}{path}", content=b"x", headers=headers, timeout=10)
        assert r.status_code == 400, path
