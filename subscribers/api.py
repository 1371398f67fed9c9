"""The provisioning API on the admin listener (admin tokens; docs/subscribers.md):

    PUT    /api/subscribers/{id}        create or replace
    GET    /api/subscribers/{id}
    DELETE /api/subscribers/{id}
    GET    /api/subscribers?address=A   which subscriber and policy an address gets now
    POST   /api/subscribers/import      JSON lines or CSV, streamed

Every change is in the audit trail (`subscriber` records) with the token that made it; an
import is one record with its row count.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from reports.api import EXTRA_PATHS, SERVICE, ApiError, _json_body, require
from reports.store import NotFound
from reports.submission import ValidationError
from subscribers.addresses import containing
from subscribers.imports import ImportError_, parse_lines
from subscribers.input import check_id, parse_subscriber
from subscribers.runtime import AUDIT_KIND, Subscribers, SubscriberWrites

SUBSCRIBERS = web.AppKey("subscribers", Subscribers | SubscriberWrites)
IMPORT_BATCH = 2000
MAX_LINE = 64 * 1024


def _id(request: web.Request) -> str:
    try:
        return check_id(request.match_info["id"])
    except ValidationError:
        raise ApiError(404, "no such subscriber") from None


async def _audit(request: web.Request, record: dict[str, Any]) -> None:
    await asyncio.to_thread(request.app[SERVICE].audit.append, {"kind": AUDIT_KIND, **record})


async def put_subscriber(request: web.Request) -> web.Response:
    who = await require(request, "admin")
    subs = request.app[SUBSCRIBERS]
    sub = parse_subscriber(_id(request), await _json_body(request), subs.policy_names)
    before, after = await asyncio.to_thread(subs.store.put, sub, who.identity)
    subs.kick()
    await _audit(
        request,
        {"action": "put", "id": sub.id, "by": who.identity, "before": before, "after": after},
    )
    return web.json_response(after, status=200 if before is not None else 201)


async def get_subscriber(request: web.Request) -> web.Response:
    await require(request, "admin")
    try:
        row = await asyncio.to_thread(request.app[SUBSCRIBERS].store.get, _id(request))
    except NotFound as exc:
        raise ApiError(404, str(exc)) from None
    return web.json_response(row)


async def delete_subscriber(request: web.Request) -> web.Response:
    who = await require(request, "admin")
    subs = request.app[SUBSCRIBERS]
    sid = _id(request)
    try:
        before = await asyncio.to_thread(subs.store.delete, sid)
    except NotFound as exc:
        raise ApiError(404, str(exc)) from None
    subs.kick()
    await _audit(request, {"action": "delete", "id": sid, "by": who.identity, "before": before})
    return web.json_response({"removed": before})


async def find_subscriber(request: web.Request) -> web.Response:
    await require(request, "admin")
    address = request.query.get("address", "")
    if len(address) > 64:
        raise ApiError(400, "address must be an IP address", "address")
    try:
        candidates = containing(address)
    except ValueError as exc:
        raise ApiError(400, str(exc), "address") from None
    subs = request.app[SUBSCRIBERS]
    found = await asyncio.to_thread(subs.store.holder, candidates)
    if found is None:
        policy, via = subs.network_policy(address)
        return web.json_response(
            {"address": address, "subscriber": None, "policy": policy, "via": via}
        )
    matched, row = found
    return web.json_response(
        {
            "address": address,
            "matched": matched,
            "subscriber": row,
            "policy": row["policy"],
            "via": "subscriber",
        }
    )


async def _lines(request: web.Request) -> AsyncIterator[str]:
    """The body's lines, read as they arrive (an import may be large)."""
    pending = b""
    async for chunk in request.content.iter_chunked(1 << 16):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if len(pending) > MAX_LINE:
            raise ApiError(400, f"a line is longer than {MAX_LINE} bytes")
        for line in lines:
            yield line.decode("utf-8", "replace")
    if pending:
        yield pending.decode("utf-8", "replace")


async def import_subscribers(request: web.Request) -> web.Response:
    who = await require(request, "admin")
    subs = request.app[SUBSCRIBERS]
    kind = {"application/x-ndjson": "jsonl", "application/jsonl": "jsonl", "text/csv": "csv"}.get(
        request.content_type
    )
    if kind is None:
        raise ApiError(415, "send application/x-ndjson (JSON lines) or text/csv")
    parser = parse_lines(kind, subs.policy_names)
    batch = []
    count = 0
    try:
        async for line in _lines(request):
            sub = parser.feed(line)
            if sub is not None:
                batch.append(sub)
            if len(batch) >= IMPORT_BATCH:
                count += await asyncio.to_thread(subs.store.import_batch, batch, who.identity)
                batch = []
                subs.kick()
    except ImportError_ as exc:
        raise ApiError(422, f"{exc} ({count} rows before it were imported)", exc.field) from None
    if batch:
        count += await asyncio.to_thread(subs.store.import_batch, batch, who.identity)
    subs.kick()
    await _audit(request, {"action": "import", "rows": count, "by": who.identity})
    return web.json_response({"imported": count})


def add_routes(app: web.Application, subscribers: Subscribers | SubscriberWrites) -> None:
    """Mount the provisioning API on the admin application."""
    app[SUBSCRIBERS] = subscribers
    app[EXTRA_PATHS] = openapi_paths()
    app.router.add_get("/api/subscribers", find_subscriber)
    app.router.add_post("/api/subscribers/import", import_subscribers)
    app.router.add_put("/api/subscribers/{id}", put_subscriber)
    app.router.add_get("/api/subscribers/{id}", get_subscriber)
    app.router.add_delete("/api/subscribers/{id}", delete_subscriber)


_ADMIN = [{"bearer": []}]
_ERROR = {"$ref": "#/components/schemas/Error"}
_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "maxLength": 100, "pattern": "^[A-Za-z0-9][A-Za-z0-9._:@+-]*$"},
}
_NAMES = {"type": "array", "items": {"type": "string"}, "maxItems": 100}
_SUBSCRIBER_IN = {
    "type": "object",
    "required": ["policy"],
    "properties": {
        "policy": {"type": "string", "description": "a configured policy"},
        "addresses": {
            "type": "array",
            "maxItems": 64,
            "items": {"type": "string"},
            "description": "IPv4 addresses (/32) and IPv6 prefixes /48../64",
        },
        "allow_domains": _NAMES,
        "block_domains": _NAMES,
    },
}
_SUBSCRIBER = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "policy": {"type": "string"},
        "addresses": {"type": "array", "items": {"type": "string"}},
        "allow_domains": {"type": "array", "items": {"type": "string"}},
        "block_domains": {"type": "array", "items": {"type": "string"}},
        "updated_at": {"type": ["string", "null"]},
        "updated_by": {"type": "string"},
    },
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": _json(_ERROR, "unreadable request"),
    "401": _json(_ERROR, "no token, or an unknown or revoked one"),
    "403": _json(_ERROR, "the token is not an admin token"),
}


def openapi_paths() -> dict[str, Any]:
    """The OpenAPI description of the routes `add_routes` mounts."""
    return {
        "/api/subscribers": {
            "get": {
                "summary": "Which subscriber holds an address and which policy it gets now",
                "security": _ADMIN,
                "parameters": [
                    {
                        "name": "address",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string", "maxLength": 64},
                    }
                ],
                "responses": {"200": _json({"type": "object"}, "the holder, or none"), **_ERRORS},
            }
        },
        "/api/subscribers/import": {
            "post": {
                "summary": "Create or replace many subscribers (JSON lines or CSV, streamed)",
                "security": _ADMIN,
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-ndjson": {"schema": {"type": "string"}},
                        "text/csv": {"schema": {"type": "string"}},
                    },
                },
                "responses": {
                    "200": _json({"type": "object"}, "`imported`: the row count"),
                    "415": _json(_ERROR, "neither JSON lines nor CSV"),
                    "422": _json(_ERROR, "a line is not a valid subscriber"),
                    **_ERRORS,
                },
            }
        },
        "/api/subscribers/{id}": {
            "put": {
                "summary": "Create or replace a subscriber (audited)",
                "security": _ADMIN,
                "parameters": [_ID],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _SUBSCRIBER_IN}},
                },
                "responses": {
                    "200": _json(_SUBSCRIBER, "replaced"),
                    "201": _json(_SUBSCRIBER, "created"),
                    "404": _json(_ERROR, "not a subscriber id"),
                    "415": _json(_ERROR, "not JSON"),
                    "422": _json(_ERROR, "a field's value"),
                    **_ERRORS,
                },
            },
            "get": {
                "summary": "One subscriber",
                "security": _ADMIN,
                "parameters": [_ID],
                "responses": {
                    "200": _json(_SUBSCRIBER, "the subscriber"),
                    "404": _json(_ERROR, "no such subscriber"),
                    **_ERRORS,
                },
            },
            "delete": {
                "summary": "Remove a subscriber and unmap its addresses (audited)",
                "security": _ADMIN,
                "parameters": [_ID],
                "responses": {
                    "200": _json({"type": "object"}, "`removed`: what it was"),
                    "404": _json(_ERROR, "no such subscriber"),
                    **_ERRORS,
                },
            },
        },
    }
