"""The console's sections and their JSON twins: the overview (`/`, `/api/stats`) and the
query log (`/queries`, `/api/querylog`).

Their data comes from the resolver's process (`dns_resolver.observability.consolefeed.ConsoleFeed`):
aggregates the overview merges per window in constant time whatever the query rate, and
the SQLite query-log store. `filterdns admin serve` alone has the store only.
"""

from __future__ import annotations

import asyncio
import calendar
import html
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from dns_resolver.observability.querystats import WINDOWS, QueryStats, StatsGroup
from dns_resolver.observability.querystore import QueryStore, Search
from reports.api import SERVICE, ApiError, _choice_param, _int_param, _json_body, require
from reports.console import View, console_page

esc = html.escape
RESULTS = ("allowed", "blocked", "cached", "refused", "servfail", "local")
TEXT_MAX = 253


@dataclass(frozen=True)
class ConsoleData:
    """What the console pages read: None for what this process does not have."""

    stats: QueryStats | StatsGroup | None
    store: QueryStore | None
    resolver: Any = None
    config: Any = None
    feed: Any = None  # the ConsoleFeed, for its written/dropped counters
    # Who turned a switch on: "POLICY" (pause) or "POLICY/CATEGORY" (block now) -> name.
    switched_by: dict[str, str] = field(default_factory=dict)


FEED = web.AppKey("console", ConsoleData)


# -- the overview --------------------------------------------------------------------------


def _lists_freshness(request: web.Request) -> dict[str, Any]:
    """When the lists in force were compiled (the snapshot's age), if there is one."""
    from listsync.update import snapshot_path

    path = snapshot_path(request.app[SERVICE].data_dir)
    try:
        built = path.stat().st_mtime
    except OSError:
        return {"compiled_at": None, "age_seconds": None}
    return {"compiled_at": _iso(built), "age_seconds": round(time.time() - built)}


def stats_dict(request: web.Request, window: str) -> dict[str, Any]:
    data = request.app[FEED]
    if data.stats is None:
        raise ApiError(404, "no statistics here: [console] enabled = true in `filterdns serve`")
    out = data.stats.summary(window)
    out["upstreams"] = data.feed.upstreams() if data.feed is not None else []
    out["lists"] = _lists_freshness(request)
    out["rows"] = data.feed.counters() if data.feed is not None else {}
    return out


async def api_stats(request: web.Request) -> web.Response:
    await require(request, "viewer")
    window = _choice_param(request, "window", tuple(WINDOWS), "1h")
    assert window is not None
    return web.json_response(stats_dict(request, window))


def svg_chart(series: list[dict[str, float]], key: str, label: str, scale: float | None) -> str:
    """A line chart as inline SVG, drawn here: no script, no external request."""
    width, height = 600, 120
    values = [p[key] for p in series]
    top = scale if scale is not None else max(values + [1e-9])
    step = width / max(len(values) - 1, 1)
    points = " ".join(
        f"{i * step:.1f},{height - (v / top) * (height - 4) - 2:.1f}" for i, v in enumerate(values)
    )
    return (
        f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{esc(label)}" '
        f'width="{width}" height="{height}">'
        f'<rect width="{width}" height="{height}" fill="#f6f8fa"/>'
        f'<polyline fill="none" stroke="#1a5fb4" stroke-width="2" points="{points}"/></svg>'
    )


def _table(view: View, caption: str, rows: list[tuple[str, Any]], link: str = "") -> str:
    if not rows:
        return f"<section><h2>{caption}</h2><p>{view.t('none')}</p></section>"
    body = "".join(
        f"<tr><td>{_cell(name, link)}</td><td>{count}</td></tr>" for name, count in rows
    )
    return (
        f"<section><h2>{caption}</h2><table><thead><tr><th scope=col>{view.t('name')}</th>"
        f"<th scope=col>{view.t('count')}</th></tr></thead><tbody>{body}</tbody></table>"
        "</section>"
    )


def _cell(name: str, link: str) -> str:
    if not link:
        return esc(str(name))
    from urllib.parse import quote

    return f'<a href="/queries?{link}={quote(str(name))}">{esc(str(name))}</a>'


@console_page
async def overview_page(request: web.Request, view: View) -> web.Response:
    window = request.query.get("window", "1h")
    window = window if window in WINDOWS else "1h"
    options = "".join(
        f'<option value="{w}"{" selected" if w == window else ""}>{w}</option>' for w in WINDOWS
    )
    head = (
        f"<h1>{view.t('overview_heading')}</h1>"
        f'<form method="get" action="/"><label for="window">{view.t("window")}</label>'
        f'<select id="window" name="window">{options}</select>'
        f'<button type="submit">{view.t("show")}</button></form>'
    )
    if request.app[FEED].stats is None:
        return view.page(view.words["overview_heading"], head + f"<p>{view.t('store_off')}</p>")
    s = stats_dict(request, window)
    percent = f"{s['blocked_share'] * 100:.1f} %"
    latency = "-" if s["upstream_latency_ms"] is None else str(s["upstream_latency_ms"])
    summary = (
        '<dl class="grid">'
        f"<div><dt>{view.t('queries')}</dt><dd id=queries-total>{s['queries']}</dd></div>"
        f"<div><dt>{view.t('blocked_share')}</dt><dd id=blocked-share>{percent}</dd></div>"
        f"<div><dt>{view.t('cache_hit_rate')}</dt>"
        f"<dd>{s['cache_hit_rate'] * 100:.1f} %</dd></div>"
        f"<div><dt>{view.t('latency')}</dt><dd>{latency}</dd></div></dl>"
    )
    charts = (
        f"<section><h2>{view.t('qps')}</h2>"
        + svg_chart(s["series"], "qps", view.words["qps"], None)
        + f"</section><section><h2>{view.t('blocked_share')}</h2>"
        + svg_chart(s["series"], "blocked_share", view.words["blocked_share"], 1.0)
        + "</section>"
    )
    tables = '<div class="grid">' + "".join(
        [
            _table(view, view.t("by_result"), list(s["by_result"].items()), "result"),
            _table(view, view.t("by_category"), list(s["by_category"].items()), "category"),
            _table(view, view.t("by_policy"), list(s["by_policy"].items()), "policy"),
            _table(view, view.t("top_blocked"), _top(s["top_blocked"]), "name"),
            _table(view, view.t("top_queried"), _top(s["top_queried"]), "name"),
            _table(view, view.t("top_clients"), _top(s["top_clients"]), "client"),
            _table(
                view,
                view.t("upstreams"),
                [
                    (u["name"], view.t("healthy") if u["healthy"] else view.t("unhealthy"))
                    for u in s["upstreams"]
                ],
            ),
        ]
    ) + "</div>"
    lists = s["lists"]
    fresh = (
        f"<section><h2>{view.t('list_freshness')}</h2><p>"
        + (
            f"{esc(lists['compiled_at'])} ({view.t('age')}: {_age(lists['age_seconds'])})"
            if lists["compiled_at"]
            else view.t("none")
        )
        + "</p></section>"
    )
    return view.page(view.words["overview_heading"], head + summary + charts + tables + fresh)


def _top(items: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [(i["name"], i["count"]) for i in items]


def _age(seconds: int | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


# -- the query log -------------------------------------------------------------------------


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def _time_param(request: web.Request, name: str) -> float | None:
    text = request.query.get(name, "").strip()
    if not text:
        return None
    try:
        if len(text) > 40:
            raise ValueError(text)
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        raise ApiError(400, f"{name} must be an ISO 8601 time", name) from None
    if moment.tzinfo is None:  # the form's datetime-local: taken as UTC
        return float(calendar.timegm(moment.timetuple()))
    return moment.timestamp()


def _text_param(request: web.Request, name: str) -> str | None:
    value = request.query.get(name, "").strip()
    if len(value) > TEXT_MAX or "\x00" in value:
        raise ApiError(400, f"{name} must be at most {TEXT_MAX} characters", name)
    return value or None


def parse_search(request: web.Request) -> Search:
    return Search(
        name=_text_param(request, "name"),
        client=_text_param(request, "client"),
        result=_text_param(request, "result"),
        category=_text_param(request, "category"),
        policy=_text_param(request, "policy"),
        since=_time_param(request, "since"),
        until=_time_param(request, "until"),
        limit=_int_param(request, "limit", 100, 1, 1000),
    )


async def _search(request: web.Request) -> tuple[list[dict[str, Any]], float]:
    store = request.app[FEED].store
    if store is None:
        raise ApiError(404, "no query-log store: [console] enabled = true, store = true")
    search = parse_search(request)
    started = time.perf_counter()
    rows = await asyncio.to_thread(store.search, search)
    elapsed = (time.perf_counter() - started) * 1000
    for row in rows:
        row["time"] = _iso(row.pop("ts"))
        row["cached"] = bool(row["cached"])
    return rows, elapsed


async def api_querylog(request: web.Request) -> web.Response:
    await require(request, "viewer")
    rows, elapsed = await _search(request)
    return web.json_response({"rows": rows, "elapsed_ms": round(elapsed, 3)})


def why_html(view: View, row: dict[str, Any]) -> str:
    """Why the row got its answer, in words a parent can follow."""
    parts = []
    for key, label in (("category", "col_category"), ("list", "col_list"), ("rule", "col_rule")):
        if row.get(key):
            parts.append(f"{view.t(label)}: <code>{esc(str(row[key]))}</code>")
    if row.get("why"):
        parts.append(esc(row["why"]))
    if row.get("decided_by"):
        parts.append(f"&rarr; <code>{esc(row['decided_by'])}</code>")
    if row.get("cached"):
        parts.append(view.t("cached"))
    return "<br>".join(parts)


def _upstream(row: dict[str, Any]) -> str:
    if not row.get("upstream"):
        return ""
    took = f" ({row['upstream_ms']} ms)" if row.get("upstream_ms") is not None else ""
    return esc(f"{row['upstream']}{took}")


@console_page
async def queries_page(request: web.Request, view: View) -> web.Response:
    fields = [
        ("name", "f_name", "text"),
        ("client", "f_client", "text"),
        ("result", "f_result", "text"),
        ("category", "f_category", "text"),
        ("policy", "f_policy", "text"),
        ("since", "f_since", "datetime-local"),
        ("until", "f_until", "datetime-local"),
    ]
    inputs = "".join(
        f'<div><label for="q-{key}">{view.t(word)}</label><input type="{kind}" id="q-{key}" '
        f'name="{key}" value="{esc(request.query.get(key, "")[:TEXT_MAX])}"'
        + (' list="results"' if key == "result" else "")
        + "></div>"
        for key, word, kind in fields
    )
    datalist = '<datalist id="results">' + "".join(
        f'<option value="{r}">' for r in RESULTS
    ) + "</datalist>"
    form = (
        f"<h1>{view.t('queries_heading')}</h1>"
        f'<form method="get" action="/queries" class="grid" role="search">{inputs}{datalist}'
        f'<div><button type="submit">{view.t("search")}</button></div></form>'
    )
    try:
        rows, elapsed = await _search(request)
    except ApiError as exc:
        return view.page(
            view.words["queries_heading"],
            form + f'<p class="error" role="alert">{esc(exc.message)}</p>',
            status=exc.status if exc.status != 404 else 200,
        )
    head = "".join(
        f"<th scope=col>{view.t(k)}</th>"
        for k in ("col_time", "col_client", "col_name", "col_type", "col_result", "col_why",
                  "col_policy", "col_upstream", "col_latency")
    )  # fmt: skip
    body = "".join(
        f'<tr class="{esc(r["result"] or "")}"><td><time datetime="{r["time"]}">'
        f"{r['time'][11:23]}</time></td>"
        f"<td>{_cell(r['client'] or '', 'client')}</td><td>{esc(r['qname'] or '')}</td>"
        f"<td>{esc(str(r['qtype'] or ''))}</td><td>{esc(r['result'] or '')}</td>"
        f"<td>{why_html(view, r)}</td><td>{esc(r['policy'] or '')}</td>"
        f"<td>{_upstream(r)}</td><td>{r['latency_ms']} ms</td></tr>"
        for r in rows
    )
    found = f'<p role="status">{view.t("rows_found", n=len(rows), ms=f"{elapsed:.0f}")}</p>'
    table = (
        f'<div class="scroll" tabindex="0" role="region" aria-label="{view.t("queries_heading")}">'
        f'<table id="querylog"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )
    return view.page(view.words["queries_heading"], form + found + table)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", overview_page)
    app.router.add_get("/api/stats", api_stats)
    app.router.add_get("/queries", queries_page)
    app.router.add_get("/api/querylog", api_querylog)
    add_policy_routes(app)
    add_client_routes(app)
    add_list_routes(app)


# -- policies: pause and block now ------------------------------------------------------------

POLICY_SWITCH = "policy-switch"
"""Audit record kind of a pause or block-now (who, which policy, until when)."""
MAX_MINUTES = 7 * 24 * 60


def _policies(request: web.Request) -> Any:
    resolver = request.app[FEED].resolver
    table = getattr(resolver, "policies", None)
    if table is None:
        raise ApiError(404, "no policies here: [policies] in the config of `filterdns serve`")
    return table


def _policy(request: web.Request) -> Any:
    table = _policies(request)
    policy = table.by_name.get(request.match_info["name"])
    if policy is None:
        raise ApiError(404, "no such policy")
    return table, policy


def policy_dict(policy: Any, now: float) -> dict[str, Any]:
    cfg = policy.config
    return {
        "name": policy.name,
        "categories": sorted(cfg.block),
        "lists": list(cfg.lists),
        "blocking_now": sorted(policy.current),
        "schedule": [
            {
                "name": w.name,
                "days": list(w.days),
                "start": w.start,
                "end": w.end,
                "block": list(w.block),
                "allow": list(w.allow),
            }
            for w in cfg.schedule
        ],
        "windows_now": sorted({n for n in policy.notes.values() if n.startswith("schedule=")}),
        "allowances": [{"category": a.category, "minutes": a.minutes} for a in cfg.allowances],
        "paused_until": _iso(policy.paused_until) if policy.paused_until > now else None,
        "blocked_until": {
            c: _iso(u) for c, u in sorted(policy.blocked_until.items()) if u > now
        },
    }


async def api_policies(request: web.Request) -> web.Response:
    await require(request, "viewer")
    table = _policies(request)
    now = time.time()
    return web.json_response({"policies": [policy_dict(p, now) for p in table.policies]})


def _minutes(value: Any) -> float:
    """Minutes from JSON or a form: a number in (0, one week]; fractions are allowed so a
    test can pause for seconds (minutes=0.05 is 3 s)."""
    try:
        minutes = float(value)
    except (TypeError, ValueError):
        raise ApiError(422, "minutes must be a number", "minutes") from None
    if not 0 < minutes <= MAX_MINUTES:
        raise ApiError(422, f"minutes must be above 0 and at most {MAX_MINUTES}", "minutes")
    return minutes


async def _body(request: web.Request) -> dict[str, Any]:
    """A JSON object or a form, as a dict."""
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        try:
            form = await request.post()
        except ValueError as exc:  # e.g. multipart without a boundary
            raise ApiError(400, f"unreadable form: {exc}") from None
        return {k: v for k, v in form.items() if isinstance(v, str)}
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise ApiError(422, "send a JSON object")
    return body


async def _switch(
    request: web.Request, action: str, category: str | None, until: float
) -> dict[str, Any]:
    who = await require(request, "admin")
    table, policy = _policy(request)
    try:
        if action == "pause":
            table.pause(policy.name, until)
        else:
            assert category is not None
            table.block_now(policy.name, category, until)
    except ValueError as exc:
        raise ApiError(422, str(exc), "category") from None
    record = {
        "kind": POLICY_SWITCH,
        "action": action,
        "policy": policy.name,
        "category": category,
        "until": _iso(until),
        "reviewer": who.identity,
        "role": who.role,
    }
    key = policy.name if category is None else f"{policy.name}/{category}"
    request.app[FEED].switched_by[key] = who.name
    await request.app[SERVICE]._audit(record)
    return policy_dict(policy, time.time())


async def _answer(request: web.Request, result: dict[str, Any]) -> web.StreamResponse:
    if request.content_type == "application/x-www-form-urlencoded":
        raise web.HTTPSeeOther("/policies")
    return web.json_response(result)


async def api_pause(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    minutes = _minutes(body.get("minutes"))
    result = await _switch(request, "pause", None, time.time() + minutes * 60)
    return await _answer(request, result)


async def api_resume(request: web.Request) -> web.StreamResponse:
    result = await _switch(request, "resume", None, time.time())
    return await _answer(request, result)


async def api_block_now(request: web.Request) -> web.StreamResponse:
    body = await _body(request)
    category = body.get("category")
    if not isinstance(category, str) or not category or len(category) > TEXT_MAX:
        raise ApiError(422, "category must be a category name", "category")
    if body.get("until"):
        text = str(body["until"])
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ApiError(422, "until must be an ISO 8601 time", "until") from None
        until = (
            float(calendar.timegm(moment.timetuple()))
            if moment.tzinfo is None
            else moment.timestamp()
        )
        if not time.time() < until <= time.time() + MAX_MINUTES * 60:
            raise ApiError(422, "until must be in the coming week", "until")
    else:
        until = time.time() + _minutes(body.get("minutes")) * 60
    result = await _switch(request, "block-now", category, until)
    return await _answer(request, result)


@console_page
async def policies_page(request: web.Request, view: View) -> web.Response:
    head = f"<h1>{view.t('policies_heading')}</h1>"
    try:
        table = _policies(request)
    except ApiError as exc:
        return view.page(view.words["policies_heading"], head + f"<p>{esc(exc.message)}</p>")
    now = time.time()
    admin = view.can("admin")
    by = request.app[FEED].switched_by
    sections = []
    for policy in table.policies:
        d = policy_dict(policy, now)
        state = []
        if d["paused_until"]:
            who = by.get(policy.name, "?")
            state.append(view.t("paused_until", until=d["paused_until"][11:19], who=who))
        for c, u in d["blocked_until"].items():
            who = by.get(f"{policy.name}/{c}", "?")
            state.append(view.t("blocked_until", category=c, until=u[11:19], who=who))
        state_text = "; ".join(state) or view.t("filtering")
        windows = ", ".join(esc(w) for w in d["windows_now"]) or "-"
        allowances = ", ".join(
            esc(f"{a['category']}: {a['minutes']} min") for a in d["allowances"]
        ) or "-"
        name = esc(policy.name)
        forms = ""
        if admin:
            options = "".join(f"<option>{esc(c)}</option>" for c in table.categories)
            forms = (
                f'<form method="post" action="/api/policies/{name}/pause">{view.form_csrf()}'
                f'<label for="m-{name}">{view.t("minutes")}</label>'
                f'<input type="number" id="m-{name}" name="minutes" value="10" min="0.05" '
                'max="10080" step="any">'
                f'<button type="submit">{view.t("pause")}</button></form>'
                f'<form method="post" action="/api/policies/{name}/resume">{view.form_csrf()}'
                f'<button type="submit">{view.t("resume")}</button></form>'
                f'<form method="post" action="/api/policies/{name}/block">{view.form_csrf()}'
                f'<label for="c-{name}">{view.t("col_category")}</label>'
                f'<select id="c-{name}" name="category">{options}</select>'
                f'<label for="u-{name}">{view.t("minutes")}</label>'
                f'<input type="number" id="u-{name}" name="minutes" value="60" min="1" max="10080">'
                f'<button type="submit">{view.t("block_now")}</button></form>'
            )
        sections.append(
            f'<section id="policy-{name}"><h2>{name}</h2><dl>'
            f"<dt>{view.t('col_state')}</dt><dd class=state>{state_text}</dd>"
            f"<dt>{view.t('col_categories')}</dt>"
            f"<dd>{esc(', '.join(d['categories'] + d['lists'])) or '-'}</dd>"
            f"<dt>{view.t('col_schedule')}</dt><dd>{windows}</dd>"
            f"<dt>{view.t('col_allowance')}</dt><dd>{allowances}</dd></dl>{forms}</section>"
        )
    return view.page(view.words["policies_heading"], head + "".join(sections))


def add_policy_routes(app: web.Application) -> None:
    app.router.add_get("/policies", policies_page)
    app.router.add_get("/api/policies", api_policies)
    app.router.add_post("/api/policies/{name}/pause", api_pause)
    app.router.add_post("/api/policies/{name}/resume", api_resume)
    app.router.add_post("/api/policies/{name}/block", api_block_now)


# -- clients ----------------------------------------------------------------------------------


def _allowance_used(resolver: Any, client: str, policy_name: str | None) -> dict[str, int]:
    """Minutes of each allowance the client used today (by the address the store shows:
    exact only when `[querylog] anonymize = "none"`)."""
    table = getattr(resolver, "policies", None)
    if table is None or table.allowances is None or policy_name not in table.by_name:
        return {}
    from dns_resolver.steps.schedule import local_day

    policy = table.by_name[policy_name]
    day, _ = local_day(time.time(), policy.schedule.zone)
    return {c: table.allowances.used(day, client, c) for c in policy.allowance_limits}


def clients_list(request: web.Request) -> list[dict[str, Any]]:
    data = request.app[FEED]
    if data.stats is None:
        raise ApiError(404, "no client statistics here: [console] enabled = true")
    out = data.stats.recent_clients()
    for c in out:
        c["last_seen"] = _iso(c["last_seen"])
        for q in c["last_queries"]:
            q["time"] = _iso(q["time"])
        c["allowance_minutes"] = _allowance_used(data.resolver, c["client"], c["policy"])
    return out


async def api_clients(request: web.Request) -> web.Response:
    await require(request, "viewer")
    return web.json_response({"clients": clients_list(request)})


@console_page
async def clients_page(request: web.Request, view: View) -> web.Response:
    head = f"<h1>{view.t('clients_heading')}</h1>"
    try:
        clients = clients_list(request)
    except ApiError as exc:
        return view.page(view.words["clients_heading"], head + f"<p>{esc(exc.message)}</p>")
    from urllib.parse import quote

    cols = "".join(
        f"<th scope=col>{view.t(k)}</th>"
        for k in ("col_client", "col_seen", "queries", "col_policy", "col_why_policy",
                  "col_allowance", "col_last")
    )  # fmt: skip
    rows = []
    for c in clients:
        last = "<br>".join(
            f'<span class="{esc(q["result"] or "")}">{esc(q["name"])}</span>'
            for q in c["last_queries"]
        )
        allowance = ", ".join(f"{esc(k)}: {v}" for k, v in c["allowance_minutes"].items())
        link = f'/queries?client={quote(c["client"])}'
        rows.append(
            f"<tr><td>{esc(c['client'])}<br><a href=\"{esc(link)}\">{view.t('their_queries')}"
            f"</a></td><td>{c['last_seen'][:19]}</td><td>{c['queries']}</td>"
            f"<td>{esc(c['policy'] or '-')}</td><td>{esc(c['why'] or '-')}</td>"
            f"<td>{allowance or '-'}</td><td>{last}</td></tr>"
        )
    table = (
        f'<div class="scroll" tabindex="0" role="region" aria-label="{view.t("clients_heading")}">'
        f'<table id="clients"><thead><tr>{cols}</tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table></div>"
    )
    return view.page(view.words["clients_heading"], head + table)


def add_client_routes(app: web.Application) -> None:
    app.router.add_get("/clients", clients_page)
    app.router.add_get("/api/clients", api_clients)


# -- lists ------------------------------------------------------------------------------------

MAX_PROBLEMS = 50  # malformed lines shown per list (all are counted)


def lists_info(request: web.Request) -> dict[str, Any]:
    """Each list: entries, version and age of a downloaded source, malformed lines, and
    the last update's result; plus the recent list-update history."""
    from fdconfig.lists import source_dir
    from listsync.fetch import SourceMeta

    service = request.app[SERVICE]
    resolver = request.app[FEED].resolver
    matcher = getattr(resolver, "base_matcher", None) or getattr(resolver, "matcher", None)
    stats = {i["list"]: i for i in matcher.stats()["lists"]} if matcher is not None else {}
    problems: dict[str, list[dict[str, Any]]] = {}
    for p in matcher.problems if matcher is not None else ():
        problems.setdefault(p.source, []).append(
            {"file": p.source, "line": p.line, "reason": p.reason, "text": p.text[:200]}
        )
    config = service_config(request)
    now = time.time()
    out = []
    for lc in config.lists if config is not None else ():
        name = lc.to_spec().display_name
        info = stats.get(name, {})
        meta = SourceMeta.load(source_dir(service.data_dir, name)) if lc.url else None
        source = info.get("source") or lc.path
        bad = [p for f, items in problems.items() if source and f.startswith(str(source))
               for p in items]  # fmt: skip
        out.append({
            "name": name,
            "url": lc.url,
            "path": str(lc.path),
            "category": info.get("category"),
            "entries": info.get("entries"),
            "version": meta.sha256[:12] if meta else None,
            "fetched_at": _iso(meta.fetched_at) if meta else None,
            "age_seconds": round(now - meta.fetched_at) if meta else None,
            "malformed": len(bad),
            "malformed_lines": bad[:MAX_PROBLEMS],
        })  # fmt: skip
    return {"lists": out}


def service_config(request: web.Request) -> Any:
    resolver = request.app[FEED].resolver
    return getattr(request.app[FEED], "config", None) or getattr(resolver, "config", None)


async def _lists_with_history(request: web.Request) -> dict[str, Any]:
    """`lists_info` with each list's last update result and the recent history (one
    `list-update` audit record per source and update)."""
    from listsync.audit import LIST_UPDATE

    info = lists_info(request)
    records = await request.app[SERVICE].audit_records(None, LIST_UPDATE)
    last = {r.get("source"): r.get("result") for r in records if isinstance(r, dict)}
    for item in info["lists"]:
        item["last_result"] = last.get(item["name"])
    info["history"] = records[-50:][::-1]
    return info


async def api_lists(request: web.Request) -> web.Response:
    await require(request, "viewer")
    return web.json_response(await _lists_with_history(request))


@console_page
async def lists_page(request: web.Request, view: View) -> web.Response:
    info = await _lists_with_history(request)
    cols = "".join(
        f"<th scope=col>{view.t(k)}</th>"
        for k in ("name", "col_category", "entries", "col_version", "age", "col_malformed",
                  "col_last_result")
    )  # fmt: skip
    rows = []
    for item in info["lists"]:
        bad = "<br>".join(
            esc(f"{p['file']}:{p['line']}: {p['reason']}") for p in item["malformed_lines"]
        )
        rows.append(
            f"<tr><td>{esc(item['name'])}</td><td>{esc(item['category'] or '-')}</td>"
            f"<td>{item['entries'] if item['entries'] is not None else '-'}</td>"
            f"<td>{esc(item['version'] or '-')}</td><td>{_age(item['age_seconds'])}</td>"
            f"<td>{item['malformed']}{'<br>' + bad if bad else ''}</td>"
            f"<td>{esc(item['last_result'] or '-')}</td></tr>"
        )
    update = (
        f'<form method="post" action="/api/reload">{view.form_csrf()}'
        f'<button type="submit">{view.t("update_now")}</button></form>'
        if view.can("admin")
        else ""
    )
    history = "".join(
        f"<li><time>{esc(str(r.get('time', '')))}</time> {esc(str(r.get('source', '')))}: "
        f"{esc(str(r.get('result', '')))}</li>"
        for r in info["history"][:20]
    )
    content = (
        f"<h1>{view.t('lists_heading')}</h1>{update}"
        f'<div class="scroll" tabindex="0" role="region" aria-label="{view.t("lists_heading")}">'
        f'<table id="lists"><thead><tr>{cols}</tr></thead><tbody>'
        + "".join(rows)
        + f"</tbody></table></div><h2>{view.t('history')}</h2>"
        + (f"<ul>{history}</ul>" if history else f"<p>{view.t('none')}</p>")
    )
    return view.page(view.words["lists_heading"], content)


def add_list_routes(app: web.Application) -> None:
    app.router.add_get("/lists", lists_page)
    app.router.add_get("/api/lists", api_lists)
