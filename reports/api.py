"""The admin API over HTTP (aiohttp): routes, authentication, limits and error shapes.

Routes and their rules are listed in docs/reports-api.md and described by `/openapi.json`
(`reports.openapi`). Every error is JSON `{"error": ..., "field": ...}` with a 4xx status
that says what kind of mistake it was: 400 unreadable (bad JSON, bad query parameter),
401 no or unknown token, 403 role too low or client not allowed, 404 unknown id, 409
already decided, 413 body too large, 415 wrong content type, 422 a field's value or type,
429 rate limited. Anything else is a bug, logged and answered 500.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web

from dns_resolver.observability.querylog import anonymize_client
from dns_resolver.steps.acl import client_ip
from filtercore.errors import FilterError
from filtercore.normalize import normalize_name
from listsync.audit import LIST_UPDATE
from reports import pages
from reports.export import FORMATS, export_audit
from reports.openapi import openapi_document
from reports.service import AdminService
from reports.session import (
    CSRF_COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    Sessions,
    csrf_matches,
)
from reports.store import Conflict, NotFound, TokenInfo
from reports.submission import ValidationError, parse_decision, parse_submission, text_field
from reports.tokens import role_allows
from reports.vocabulary import KINDS, NAME_LEN, REASON_LEN, STATUSES

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024
MAX_ID = 2**31 - 1
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

SERVICE = web.AppKey("service", AdminService)
ALLOW = web.AppKey("allow", tuple)
PROXIES = web.AppKey("proxies", tuple)
SESSIONS = web.AppKey("sessions", Sessions)
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Paths other packages mount on this application describe themselves (subscribers.api).
EXTRA_PATHS = web.AppKey("extra_paths", dict)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
USER = "token"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    """An error answer: status, message and the field it is about."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def _error(status: int, message: str, field: str | None = None) -> web.Response:
    body: dict[str, Any] = {"error": message}
    if field:
        body["field"] = field
    headers = {"WWW-Authenticate": 'Bearer realm="filterdns"'} if status == 401 else None
    return web.json_response(body, status=status, headers=headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON error with the right status."""
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.message, exc.field)
    except ValidationError as exc:
        return _error(exc.status, exc.message, exc.field or None)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = exc.reason
        if exc.status == 413:
            reason = f"the body is larger than {MAX_BODY} bytes"
        return _error(exc.status, reason)
    except Exception:
        log.exception("admin API: %s %s failed", request.method, request.path)
        return _error(500, "internal error (logged)")


def _token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def _csrf_sent(request: web.Request) -> str | None:
    """The CSRF value a request carries: its header, or its form's `csrf` field."""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.content_type in FORM_TYPES:
        try:
            form = await request.post()
        except ValueError:
            return None
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    return sent


async def session_token(request: web.Request) -> str | None:
    """The token behind the request's session cookie; for a request that changes
    something, only when it also carries the CSRF value (403 otherwise)."""
    token = request.app[SESSIONS].token(request.cookies.get(SESSION_COOKIE))
    if token is None:
        return None
    if request.method not in SAFE_METHODS and not csrf_matches(
        request.cookies.get(CSRF_COOKIE), await _csrf_sent(request)
    ):
        raise ApiError(403, "missing or wrong CSRF token; reload the page and try again")
    return token


async def identify(request: web.Request) -> TokenInfo | None:
    """Who the request comes from (bearer token or session cookie), or None."""
    token = _token(request) or await session_token(request)
    if token is None:
        return None
    return await asyncio.to_thread(request.app[SERVICE].store.authenticate, token)


async def require(request: web.Request, role: str) -> TokenInfo:
    """The caller (bearer token or console session), who must have at least `role`
    (401 / 403 otherwise)."""
    if _token(request) is None and request.app[SESSIONS].token(
        request.cookies.get(SESSION_COOKIE)
    ) is None:
        raise ApiError(401, "this endpoint needs Authorization: Bearer TOKEN or a session")
    who = await identify(request)
    if who is None:
        raise ApiError(401, "unknown or revoked token")
    if not role_allows(who.role, role):
        raise ApiError(403, f"this needs the {role} role; the token has {who.role}")
    return who


async def _json_body(request: web.Request) -> Any:
    """The request's JSON body (400 when it is not JSON, 415 for another content type)."""
    if request.content_type != "application/json":
        raise ApiError(415, f"send application/json, not {request.content_type or 'nothing'}")
    raw = await request.read()
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "the body is not valid JSON: nested too deeply") from None


def _int_param(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer", name) from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be between {lo} and {hi}", name)
    return value


def _choice_param(
    request: web.Request, name: str, choices: Sequence[str], default: str | None
) -> str | None:
    value = request.query.get(name, default)
    if value is not None and value not in choices:
        raise ApiError(400, f"{name} must be one of {', '.join(choices)}", name)
    return value


async def _audit_records(request: web.Request, kind: str | None) -> list[dict[str, Any]]:
    """Audit records from `?since=` on, of `kind`; an unreadable `since` is a 400."""
    since = request.query.get("since")
    if since is not None and len(since) > 64:
        raise ApiError(400, "since must be an ISO 8601 time", "since")
    try:
        return await request.app[SERVICE].audit_records(since, kind)
    except (ValueError, TypeError, OverflowError):
        raise ApiError(400, "since must be an ISO 8601 time", "since") from None


def _report_id(request: web.Request) -> int:
    try:
        value = int(request.match_info["id"])
    except ValueError:
        raise ApiError(404, "no such report") from None
    if not 1 <= value <= MAX_ID:
        raise ApiError(404, "no such report")
    return value


# -- public: submitting reports ---------------------------------------------------------------


def _ip(text: str) -> IPAddress | None:
    return client_ip(text.strip())


def client_address(request: web.Request) -> IPAddress | None:
    """The submitting client. Behind a trusted reverse proxy (`reports.trusted_proxies`) it
    is the right-most X-Forwarded-For address that is not itself a trusted proxy: the
    left-most ones are whatever the client chose to send."""
    ip = _ip(request.remote or "")
    proxies = request.app[PROXIES]
    hops = [h for h in request.headers.get("X-Forwarded-For", "").split(",") if h.strip()]
    while ip is not None and hops and any(ip in net for net in proxies):
        ip = _ip(hops.pop())
    return ip


def _client_allowed(request: web.Request) -> str | None:
    """The anonymised client (its /24 or /48), or None when `reports.allow` refuses it."""
    ip = client_address(request)
    if ip is None or not any(ip in net for net in request.app[ALLOW]):
        return None
    return anonymize_client(str(ip), "truncate")


async def submit_report(request: web.Request) -> web.StreamResponse:
    """POST /api/reports: JSON answers 201, a form is redirected to the thank-you page."""
    service = request.app[SERVICE]
    is_form = request.content_type in FORM_TYPES
    client = _client_allowed(request)
    if client is None:
        raise ApiError(403, "reports are not accepted from this network")
    if not service.limiter.allow(client):
        wait = max(1, round(service.limiter.retry_after(client)))
        return web.json_response(
            {"error": f"too many reports from your network; try again in {wait} s"},
            status=429,
            headers={"Retry-After": str(wait)},
        )
    if is_form:
        try:
            form = await request.post()
        except ValueError as exc:  # e.g. multipart without a boundary
            raise ApiError(400, f"unreadable form: {exc}") from None
        data = {k: v for k, v in form.items() if isinstance(v, str)}
        try:
            submission = parse_submission(data, service.categories)
        except ValidationError as exc:
            return pages.form_error(exc, data, service.categories)
        accepted = await service.submit(submission, client)
        raise web.HTTPSeeOther(f"/report/thanks?id={accepted.id}")
    submission = parse_submission(await _json_body(request), service.categories)
    accepted = await service.submit(submission, client)
    return web.json_response(
        {"id": accepted.id, "count": accepted.count, "duplicate": accepted.duplicate},
        status=201,
    )


# -- reviewers ---------------------------------------------------------------------------------


async def list_reports(request: web.Request) -> web.Response:
    await require(request, "reviewer")
    status = _choice_param(request, "status", (*STATUSES, "all"), "open")
    kind = _choice_param(request, "kind", KINDS, None)
    rows, total = await request.app[SERVICE].queue(
        status=None if status == "all" else status,
        kind=kind,
        limit=_int_param(request, "limit", 100, 1, 500),
        offset=_int_param(request, "offset", 0, 0, MAX_ID),
    )
    return web.json_response({"reports": rows, "total": total})


async def get_report(request: web.Request) -> web.Response:
    await require(request, "reviewer")
    try:
        row = await request.app[SERVICE].report(_report_id(request))
    except NotFound as exc:
        raise ApiError(404, str(exc)) from None
    return web.json_response(row)


async def decide(request: web.Request) -> web.Response:
    who = await require(request, "reviewer")
    report_id = _report_id(request)
    service = request.app[SERVICE]
    decision = parse_decision(await _json_body(request), service.categories)
    try:
        decided = await service.decide(report_id, decision, who)
    except NotFound as exc:
        raise ApiError(404, str(exc)) from None
    except Conflict as exc:
        raise ApiError(409, str(exc)) from None
    return web.json_response(
        {"decision": decided.decision, "report": decided.report, "override": decided.override}
    )


async def list_overrides(request: web.Request) -> web.Response:
    await require(request, "reviewer")
    rows = await asyncio.to_thread(request.app[SERVICE].store.overrides)
    return web.json_response({"overrides": rows})


async def delete_override(request: web.Request) -> web.Response:
    who = await require(request, "admin")
    host = request.match_info["host"]
    reason = text_field(request.query, "reason", REASON_LEN, required=True)
    assert reason is not None  # required=True
    try:
        host = normalize_name(host)  # also keeps NUL and the like away from the database
    except FilterError:
        raise ApiError(404, "no such override") from None
    try:
        previous = await request.app[SERVICE].delete_override(host, who, reason)
    except NotFound as exc:
        raise ApiError(404, str(exc)) from None
    return web.json_response({"removed": previous})


async def audit(request: web.Request) -> web.Response:
    await require(request, "reviewer")
    fmt = _choice_param(request, "format", FORMATS, "json")
    kind = request.query.get("kind")
    if kind is not None and len(kind) > NAME_LEN:
        raise ApiError(400, "kind is too long", "kind")
    records = await _audit_records(request, kind)
    if fmt == "csv":
        return web.Response(
            text=export_audit(records, "csv"),
            content_type="text/csv",
            headers={"Content-Disposition": 'attachment; filename="filterdns-audit.csv"'},
        )
    return web.json_response({"records": records})


async def history(request: web.Request) -> web.Response:
    await require(request, "reviewer")
    records = await _audit_records(request, LIST_UPDATE)
    return web.json_response({"records": records})


async def check(request: web.Request) -> web.Response:
    await require(request, "viewer")
    name = request.query.get("name", "")
    if not name.strip() or len(name) > 4096:
        raise ApiError(422, "give ?name= a host name or URL (at most 4096 characters)", "name")
    service = request.app[SERVICE]
    try:
        verdict = service.check_target(name)
    except FilterError as exc:
        return web.json_response({"input": name, "error": str(exc)}, status=422)
    return web.json_response({"input": name, **verdict.as_dict()})


async def reload(request: web.Request) -> web.Response:
    await require(request, "admin")
    # A rejected file or a failed list reload keeps what runs (and says so in the log and
    # in the answer): not a server error.
    return web.json_response(await request.app[SERVICE].reload())


async def whoami(request: web.Request) -> web.Response:
    who = await require(request, "viewer")
    return web.json_response({"id": who.id, "name": who.name, "role": who.role})


async def openapi(request: web.Request) -> web.Response:
    document = openapi_document(str(request.url.origin()))
    document["paths"].update(request.app.get(EXTRA_PATHS, {}))
    return web.json_response(document)


def make_app(
    service: AdminService, allow: Sequence[Any], trusted_proxies: Sequence[Any] = ()
) -> web.Application:
    """The aiohttp application; `allow` are the networks that may submit reports,
    `trusted_proxies` the reverse proxies whose X-Forwarded-For is believed."""
    app = web.Application(client_max_size=MAX_BODY, middlewares=[errors_middleware])
    app[SERVICE] = service
    app[ALLOW] = tuple(allow)
    app[PROXIES] = tuple(trusted_proxies)
    app[SESSIONS] = Sessions()
    app.router.add_post("/api/reports", submit_report)
    app.router.add_get("/api/reports", list_reports)
    app.router.add_get(r"/api/reports/{id}", get_report)
    app.router.add_post(r"/api/reports/{id}/decision", decide)
    app.router.add_get("/api/overrides", list_overrides)
    app.router.add_delete("/api/overrides/{host}", delete_override)
    app.router.add_get("/api/audit", audit)
    app.router.add_get("/api/history", history)
    app.router.add_get("/api/check", check)
    app.router.add_post("/api/reload", reload)
    app.router.add_get("/api/whoami", whoami)
    app.router.add_get("/openapi.json", openapi)
    pages.add_routes(app, SERVICE)
    # Imported here: the console's pages build on this module's authentication.
    from reports import console

    console.add_routes(app)
    return app
