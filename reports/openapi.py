"""The OpenAPI 3 document of the admin API, served at `/openapi.json`.

Written by hand, next to the routes in `reports.api`; `tests/reports/test_openapi.py`
checks that every route is described and every described path is routed, and
schemathesis checks the running API against it.
"""

from __future__ import annotations

from typing import Any

from reports.vocabulary import (
    ACTIONS,
    COMMENT_LEN,
    KINDS,
    NAME_LEN,
    PUBLIC_KINDS,
    REASON_LEN,
    SOURCES,
    TARGET_LEN,
)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": _json(_ref("Error"), "unreadable request (bad JSON or query parameter)"),
    "401": _json(_ref("Error"), "no token, or an unknown or revoked one"),
    "403": _json(_ref("Error"), "the token's role is not enough"),
}
_NULLABLE_STRING = {"type": ["string", "null"]}
_VERDICT = {
    "type": "object",
    "description": "Verdict.as_dict(): what `filterdns check --json` prints",
    "properties": {
        "action": {"type": "string", "enum": ["allow", "block", "none"]},
        "category": _NULLABLE_STRING,
        "categories": {"type": "array", "items": {"type": "string"}},
        "list": _NULLABLE_STRING,
        "rule": _NULLABLE_STRING,
        "source": _NULLABLE_STRING,
        "line": {"type": "integer"},
        "matched": _NULLABLE_STRING,
        "kind": _NULLABLE_STRING,
    },
}
_ID_PARAM = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}
_SINCE = {
    "name": "since",
    "in": "query",
    "schema": {"type": "string", "format": "date-time"},
    "description": "only records at or after this time",
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


_NAME_PARAM = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_TEXT = {"type": "string", "maxLength": 253}
_SWITCHED = _json({"type": "object"}, "the policy as `/api/policies` shows it")


def console_paths(security: list[dict[str, list[str]]]) -> dict[str, Any]:
    """The console's JSON twins (`reports.console_pages`); viewer and up, switches admin."""
    return {
        "/api/stats": {
            "get": {
                "summary": "The overview: rates, shares, top names and clients, upstreams",
                "security": security,
                "parameters": [
                    _query("window", {"type": "string", "enum": ["1h", "24h", "7d"]}, "window")
                ],
                "responses": {
                    "200": _json({"type": "object"}, "the numbers"),
                    "404": _json(_ref("Error"), "no statistics in this process"),
                    **_ERRORS,
                },
            }
        },
        "/api/querylog": {
            "get": {
                "summary": "Search the query log, newest first; every row says why",
                "security": security,
                "parameters": [
                    _query("name", _TEXT, "part of the name"),
                    _query("client", _TEXT, "the client as stored (anonymised)"),
                    _query("result", _TEXT, "allowed, blocked, cached, ..."),
                    _query("category", _TEXT, "category"),
                    _query("policy", _TEXT, "policy"),
                    _query("since", {"type": "string", "format": "date-time"}, "from"),
                    _query("until", {"type": "string", "format": "date-time"}, "before"),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "rows"),
                ],
                "responses": {
                    "200": _json(
                        {"type": "object"},
                        "rows (time, client, qname, qtype, protocol, result, rcode, category, "
                        "list, rule, policy, client_why, why, decided_by, cached, upstream, "
                        "latency_ms, upstream_ms) and elapsed_ms",
                    ),
                    "404": _json(_ref("Error"), "no query-log store"),
                    **_ERRORS,
                },
            }
        },
        "/api/clients": {
            "get": {
                "summary": "Clients seen recently: policy and why, allowance used, last queries",
                "security": security,
                "responses": {
                    "200": _json({"type": "object"}, "the clients"),
                    "404": _json(_ref("Error"), "no statistics in this process"),
                    **_ERRORS,
                },
            }
        },
        "/api/lists": {
            "get": {
                "summary": "Each list: entries, version, age, malformed lines; the history",
                "security": security,
                "responses": {"200": _json({"type": "object"}, "the lists"), **_ERRORS},
            }
        },
        "/api/policies": {
            "get": {
                "summary": "Policies: categories, lists, schedules, allowances, switches",
                "security": security,
                "responses": {
                    "200": _json({"type": "object"}, "the policies"),
                    "404": _json(_ref("Error"), "no policies"),
                    **_ERRORS,
                },
            }
        },
        "/api/policies/{name}/pause": {
            "post": {
                "summary": "Pause a policy's filtering for N minutes (admin; audited)",
                "security": security,
                "parameters": [_NAME_PARAM],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["minutes"],
                                "properties": {
                                    "minutes": {
                                        "type": "number",
                                        "exclusiveMinimum": 0,
                                        "maximum": 10080,
                                    }
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _SWITCHED,
                    "404": _json(_ref("Error"), "no such policy"),
                    "422": _json(_ref("Error"), "bad minutes"),
                    **_ERRORS,
                },
            }
        },
        "/api/policies/{name}/resume": {
            "post": {
                "summary": "End a pause now (admin; audited)",
                "security": security,
                "parameters": [_NAME_PARAM],
                "responses": {
                    "200": _SWITCHED,
                    "404": _json(_ref("Error"), "no such policy"),
                    **_ERRORS,
                },
            }
        },
        "/api/policies/{name}/block": {
            "post": {
                "summary": "Block a category now, until a time or for N minutes (admin; audited)",
                "security": security,
                "parameters": [_NAME_PARAM],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["category"],
                                "properties": {
                                    "category": {"type": "string"},
                                    "until": {"type": "string", "format": "date-time"},
                                    "minutes": {"type": "number"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _SWITCHED,
                    "404": _json(_ref("Error"), "no such policy"),
                    "422": _json(_ref("Error"), "bad category, until or minutes"),
                    **_ERRORS,
                },
            }
        },
    }


def openapi_document(server: str = "http://127.0.0.1:8081") -> dict[str, Any]:
    """The document, with `server` as its base URL."""
    reviewer: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "filterdns admin API",
            "version": "1",
            "description": "Public reports and appeals, the review queue, overrides, the "
            "audit trail. Every endpoint but report submission needs a bearer token "
            "(`filterdns admin token create`).",
        },
        "servers": [{"url": server}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}, "field": {"type": "string"}},
                },
                "Submission": {
                    "type": "object",
                    "required": ["target"],
                    "properties": {
                        "target": {
                            "type": "string",
                            "maxLength": TARGET_LEN,
                            "description": "a host name or http(s) URL",
                        },
                        "kind": {"type": "string", "enum": list(PUBLIC_KINDS)},
                        "category": {"type": "string", "maxLength": NAME_LEN},
                        "comment": {"type": "string", "maxLength": COMMENT_LEN},
                        "list": {"type": "string", "maxLength": NAME_LEN},
                        "policy": {"type": "string", "maxLength": NAME_LEN},
                    },
                },
                "Accepted": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "count": {"type": "integer"},
                        "duplicate": {"type": "boolean"},
                    },
                },
                "Report": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "integer"},
                        "target": {"type": "string"},
                        "host": {"type": "string"},
                        "kind": {"type": "string", "enum": list(KINDS)},
                        "source": {"type": "string", "enum": list(SOURCES)},
                        "evidence": {
                            "type": ["object", "null"],
                            "description": "a lead's reasons (docs/leads.md); null otherwise",
                        },
                        "category": _NULLABLE_STRING,
                        "list": _NULLABLE_STRING,
                        "policy": _NULLABLE_STRING,
                        "comment": _NULLABLE_STRING,
                        "count": {"type": "integer"},
                        "status": {"type": "string", "enum": ["open", "decided"]},
                        "reporter": _NULLABLE_STRING,
                        "created_at": {"type": "string"},
                        "updated_at": {"type": "string"},
                        "verdict": _VERDICT,
                    },
                },
                "DecisionInput": {
                    "type": "object",
                    "required": ["action", "reason"],
                    "properties": {
                        "action": {"type": "string", "enum": list(ACTIONS)},
                        "category": {"type": "string", "maxLength": NAME_LEN},
                        "reason": {"type": "string", "maxLength": REASON_LEN},
                    },
                },
                "Override": {
                    "type": "object",
                    "properties": {
                        "host": {"type": "string"},
                        "action": {"type": "string", "enum": ["block", "allow"]},
                        "category": _NULLABLE_STRING,
                        "decided_by": {"type": "string"},
                        "reason": {"type": "string"},
                        "report_id": {"type": ["integer", "null"]},
                        "updated_at": {"type": "string"},
                    },
                },
                "Verdict": _VERDICT,
            },
        },
        "paths": {
            "/api/reports": {
                "post": {
                    "summary": "Report a miss or appeal a block (no token needed)",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": _ref("Submission")},
                            "application/x-www-form-urlencoded": {"schema": _ref("Submission")},
                        },
                    },
                    "responses": {
                        "201": _json(_ref("Accepted"), "stored (committed), or merged"),
                        "303": {"description": "a form post: see the thank-you page"},
                        "400": _ERRORS["400"],
                        "403": _json(_ref("Error"), "reports not accepted from this network"),
                        "413": _json(_ref("Error"), "body larger than 64 KiB"),
                        "415": _json(_ref("Error"), "not JSON or a form"),
                        "422": _json(_ref("Error"), "a field is invalid"),
                        "429": _json(_ref("Error"), "rate limited; see Retry-After"),
                    },
                },
                "get": {
                    "summary": "The review queue: most reported first, then oldest",
                    "security": reviewer,
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["open", "decided", "all"]},
                        },
                        {
                            "name": "kind",
                            "in": "query",
                            "schema": {"type": "string", "enum": list(KINDS)},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                        },
                        {
                            "name": "offset",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0},
                        },
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "reports": {"type": "array", "items": _ref("Report")},
                                    "total": {"type": "integer"},
                                },
                            },
                            "the queue",
                        ),
                        **_ERRORS,
                    },
                },
            },
            "/api/reports/{id}": {
                "get": {
                    "summary": "One report, its decisions and current verdict",
                    "security": reviewer,
                    "parameters": [_ID_PARAM],
                    "responses": {
                        "200": _json(_ref("Report"), "the report"),
                        "404": _json(_ref("Error"), "no such report"),
                        **_ERRORS,
                    },
                }
            },
            "/api/reports/{id}/decision": {
                "post": {
                    "summary": "Decide: block (with a category), allow, or reject",
                    "security": reviewer,
                    "parameters": [_ID_PARAM],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("DecisionInput")}},
                    },
                    "responses": {
                        "200": _json({"type": "object"}, "decided; override applied"),
                        "404": _json(_ref("Error"), "no such report"),
                        "409": _json(_ref("Error"), "already decided"),
                        "413": _json(_ref("Error"), "body larger than 64 KiB"),
                        "415": _json(_ref("Error"), "not JSON"),
                        "422": _json(_ref("Error"), "a field is invalid"),
                        **_ERRORS,
                    },
                }
            },
            "/api/overrides": {
                "get": {
                    "summary": "The override list in force",
                    "security": reviewer,
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "overrides": {"type": "array", "items": _ref("Override")}
                                },
                            },
                            "the overrides",
                        ),
                        **_ERRORS,
                    },
                }
            },
            "/api/overrides/{host}": {
                "delete": {
                    "summary": "Remove an override (admin; audited)",
                    "security": reviewer,
                    "parameters": [
                        {
                            "name": "host",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "reason",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string", "maxLength": REASON_LEN},
                        },
                    ],
                    "responses": {
                        "200": _json({"type": "object"}, "removed"),
                        "404": _json(_ref("Error"), "no such override"),
                        "422": _json(_ref("Error"), "no reason"),
                        **_ERRORS,
                    },
                }
            },
            "/api/audit": {
                "get": {
                    "summary": "The audit trail, as JSON or CSV",
                    "security": reviewer,
                    "parameters": [
                        {
                            "name": "format",
                            "in": "query",
                            "schema": {"type": "string", "enum": ["json", "csv"]},
                        },
                        {"name": "kind", "in": "query", "schema": {"type": "string"}},
                        _SINCE,
                    ],
                    "responses": {
                        "200": {
                            "description": "the records",
                            "content": {
                                "application/json": {"schema": {"type": "object"}},
                                "text/csv": {"schema": {"type": "string"}},
                            },
                        },
                        **_ERRORS,
                    },
                }
            },
            "/api/history": {
                "get": {
                    "summary": "List updates (list-update audit records)",
                    "security": reviewer,
                    "parameters": [_SINCE],
                    "responses": {"200": _json({"type": "object"}, "the records"), **_ERRORS},
                }
            },
            "/api/check": {
                "get": {
                    "summary": "Explain the verdict for a name or URL (overrides included)",
                    "security": reviewer,
                    "parameters": [
                        {
                            "name": "name",
                            "in": "query",
                            "required": True,
                            "schema": {"type": "string"},
                        }
                    ],
                    "responses": {
                        "200": _json(_ref("Verdict"), "the verdict, with `input`"),
                        "422": _json({"type": "object"}, "not a host name or URL"),
                        **_ERRORS,
                    },
                }
            },
            "/api/reload": {
                "post": {
                    "summary": "Re-read the configuration file, reload the lists and the "
                    "overrides (admin)",
                    "security": reviewer,
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "properties": {
                                    "reloaded": {"type": "boolean"},
                                    "config": {"enum": ["applied", "rejected"]},
                                    "error": {"type": "string"},
                                    "restart_needed": {
                                        "type": "array",
                                        "items": {"type": "string"},
                                    },
                                },
                                "required": ["reloaded"],
                            },
                            "reloaded is false when the lists failed to load or the file "
                            "was rejected (what runs is kept); config says whether the "
                            "file was applied, error why it was rejected (file and key), "
                            "restart_needed the changed keys that only a restart applies",
                        ),
                        **_ERRORS,
                    },
                }
            },
            **console_paths(reviewer),
            "/api/whoami": {
                "get": {
                    "summary": "The token's id, name and role",
                    "security": reviewer,
                    "responses": {"200": _json({"type": "object"}, "the token"), **_ERRORS},
                }
            },
        },
    }
