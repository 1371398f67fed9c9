"""The console: server-rendered pages for the people who run the resolver.

Every page is plain HTML from `templates/` inside one frame (navigation, the check box,
who is logged in), in English or French (`translations/`, chosen by `?lang=` or the
browser's Accept-Language, as the block page does), and has a JSON twin under `/api/`.
Logging in takes an API token and sets a session cookie (`reports.session`); every form
carries the CSRF value. Pages need at least the `viewer` role; changes need more.
"""

from __future__ import annotations

import asyncio
import html
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp import web

from dns_resolver.blockpage.server import pick_language, read_translations
from filtercore.errors import FilterError
from reports import pages
from reports.api import SERVICE, SESSIONS, ApiError, identify
from reports.session import (
    COOKIE_FLAGS,
    CSRF_COOKIE,
    CSRF_FIELD,
    SESSION_COOKIE,
    csrf_matches,
    new_csrf,
)
from reports.store import TokenInfo
from reports.tokens import role_allows

HERE = Path(__file__).resolve().parent
LANG_COOKIE = "fdns_lang"
NAV = (
    ("/", "nav_overview"),
    ("/queries", "nav_queries"),
    ("/clients", "nav_clients"),
    ("/policies", "nav_policies"),
    ("/lists", "nav_lists"),
    ("/review", "nav_review"),
)
esc = html.escape


@cache
def translations() -> dict[str, dict[str, Any]]:
    """Language code -> the console's words, from `translations/*.toml`."""
    return read_translations(HERE / "translations")


class View:
    """One request's language, words, CSRF value and user, for rendering."""

    def __init__(self, request: web.Request, who: TokenInfo | None) -> None:
        self.request = request
        self.who = who
        words = translations()
        asked = request.query.get("lang") or request.cookies.get(LANG_COOKIE)
        self.lang = asked if asked in words else pick_language(
            request.headers.get("Accept-Language"), words
        )
        self.words = words[self.lang]
        self.csrf = request.cookies.get(CSRF_COOKIE) or new_csrf()

    def t(self, key: str, **values: Any) -> str:
        """The word for `key`, HTML-escaped, with `{values}` (escaped too) filled in."""
        text = esc(self.words[key])
        return text.format(**{k: esc(str(v)) for k, v in values.items()}) if values else text

    def _finish(self, response: web.Response) -> web.Response:
        response.headers["Content-Language"] = self.lang
        response.headers["Cache-Control"] = "no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        if self.request.cookies.get(CSRF_COOKIE) != self.csrf:
            response.set_cookie(CSRF_COOKIE, self.csrf, **COOKIE_FLAGS)
        if "lang" in self.request.query and self.request.query["lang"] == self.lang:
            response.set_cookie(LANG_COOKIE, self.lang, **COOKIE_FLAGS)
        return response

    def _other(self) -> dict[str, str]:
        other = next(code for code in translations() if code != self.lang)
        return {"other_lang": other, "other_language": esc(translations()[other]["language"])}

    def page(self, title: str, content: str, status: int = 200) -> web.Response:
        """`content` (already escaped) inside the console's frame."""
        path = self.request.path
        nav = "\n".join(
            f'<li><a href="{href}"{" aria-current=page" if href == path else ""}>'
            f"{self.t(key)}</a></li>"
            for href, key in NAV
        )
        assert self.who is not None
        body = pages._template("console.html").substitute(
            skip=self.t("skip"),
            nav_label=self.t("nav_label"),
            nav=nav,
            who=self.t("signed_in", name=self.who.name, role=self.who.role),
            csrf=esc(self.csrf),
            logout=self.t("logout"),
            check_label=self.t("check_label"),
            check_button=self.t("check_button"),
            content=content,
            **self._other(),
        )
        text = pages._template("base.html").substitute(
            title=esc(f"{title} - {self.words['title']}"), body=body, lang=self.lang
        )
        return self._finish(pages.page(text, status))

    def login(self, error: str = "", status: int = 200) -> web.Response:
        nxt = self.request.query.get("next", "/")
        body = pages._template("login.html").substitute(
            login_heading=self.t("login_heading"),
            error=f'<p class="error" role="alert">{error}</p>' if error else "",
            csrf=esc(self.csrf),
            next=esc(safe_next(nxt)),
            login_token=self.t("login_token"),
            login_help=self.t("login_help"),
            login_button=self.t("login_button"),
            **self._other(),
        )
        text = pages._template("base.html").substitute(
            title=self.t("login_heading"), body=body, lang=self.lang
        )
        return self._finish(pages.page(text, status))

    def form_csrf(self) -> str:
        """The hidden field every console form carries."""
        return f'<input type="hidden" name="{CSRF_FIELD}" value="{esc(self.csrf)}">'

    def can(self, role: str) -> bool:
        return self.who is not None and role_allows(self.who.role, role)


def safe_next(target: str) -> str:
    """Where to go after logging in: a path on this site only (no open redirect)."""
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


PageHandler = Callable[[web.Request, View], Awaitable[web.StreamResponse]]


def console_page(handler: PageHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A page for logged-in users (viewer and up); others are sent to the login form."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            who = await identify(request)
        except ApiError:
            who = None
        if who is None or not role_allows(who.role, "viewer"):
            raise web.HTTPSeeOther("/login?next=" + quote(request.path_qs, safe=""))
        return await handler(request, View(request, who))

    return wrapped


async def _form(request: web.Request) -> dict[str, str]:
    try:
        form = await request.post()
    except ValueError as exc:  # e.g. multipart without a boundary
        raise ApiError(400, f"unreadable form: {exc}") from None
    return {k: v for k, v in form.items() if isinstance(v, str)}


async def login_form(request: web.Request) -> web.Response:
    return View(request, None).login()


async def login(request: web.Request) -> web.StreamResponse:
    view = View(request, None)
    form = await _form(request)
    if not csrf_matches(request.cookies.get(CSRF_COOKIE), form.get(CSRF_FIELD)):
        return view.login(view.t("login_failed"), status=403)
    token = form.get("token", "").strip()
    store = request.app[SERVICE].store
    who = await asyncio.to_thread(store.authenticate, token) if 0 < len(token) < 200 else None
    if who is None:
        return view.login(view.t("login_failed"), status=401)
    response = web.HTTPSeeOther(safe_next(form.get("next", "/")))
    response.set_cookie(SESSION_COOKIE, request.app[SESSIONS].create(token), **COOKIE_FLAGS)
    # A fresh CSRF value with the new session, so one planted before login is worthless.
    response.set_cookie(CSRF_COOKIE, new_csrf(), **COOKIE_FLAGS)
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    if not csrf_matches(request.cookies.get(CSRF_COOKIE), form.get(CSRF_FIELD)):
        raise ApiError(403, "missing or wrong CSRF token; reload the page and try again")
    request.app[SESSIONS].drop(request.cookies.get(SESSION_COOKIE))
    response = web.HTTPSeeOther("/login")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


def verdict_html(view: View, verdict: dict[str, Any]) -> str:
    """A verdict (`Verdict.as_dict()`) as a small table that says why."""
    action = verdict.get("action", "none")
    word = {"block": "verdict_block", "allow": "verdict_allow"}.get(action, "verdict_none")
    rows = [(view.t("col_action"), f'<span class="{esc(action)}">{view.t(word)}</span>')]
    for key, label in (("category", "col_category"), ("list", "col_list"), ("rule", "col_rule")):
        if verdict.get(key):
            rows.append((view.t(label), f"<code>{esc(str(verdict[key]))}</code>"))
    if verdict.get("source"):
        rows.append((view.t("col_source"), esc(f"{verdict['source']} ({verdict.get('line')})")))
    return "<dl>" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


@console_page
async def check_page(request: web.Request, view: View) -> web.Response:
    name = request.query.get("name", "").strip()[:4096]
    service = request.app[SERVICE]
    try:
        body = verdict_html(view, service.check_target(name).as_dict()) if name else ""
    except FilterError as exc:
        body = f'<p class="error" role="alert">{esc(str(exc))}</p>'
    heading = view.t("check_heading", name=name)
    return view.page(heading, f"<h1>{heading}</h1>\n{body}")


@console_page
async def review_page(request: web.Request, view: View) -> web.Response:
    service = request.app[SERVICE]
    content = pages._template("review.html").substitute(
        category_options=pages.category_options(service.categories)
    )
    return view.page(view.words["nav_review"], content)


def add_routes(app: web.Application) -> None:
    """The console's login and pages (the sections add theirs in `reports.console_pages`)."""
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/check", check_page)
    app.router.add_get("/review", review_page)
    from reports import console_pages

    console_pages.add_routes(app)
