"""The server-rendered public pages: the report form and its thank-you page, and the
helpers every page uses (templates, security headers).

Plain HTML from `reports/templates/` (string.Template, every value HTML-escaped), no
external assets and no build step. The review page is in the console (`reports.console`):
a static shell whose few lines of JavaScript fetch the queue with the console's session
(or a token typed in, kept in sessionStorage), so no page carries reviewer data without
a login.
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path
from string import Template
from typing import Any

from aiohttp import web

from filtercore.categories import CategoryMap
from reports.submission import ValidationError

TEMPLATES = Path(__file__).resolve().parent / "templates"
# The pages hold no third-party content; forbid everything else they do not need.
_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@cache
def _template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text(encoding="utf-8"))


def render(title: str, body_template: str, lang: str = "en", **values: str) -> str:
    """A whole page: `body_template` filled with `values` (already escaped) in base.html."""
    body = _template(body_template).substitute(values)
    return _template("base.html").substitute(title=html.escape(title), body=body, lang=lang)


def page(text: str, status: int = 200) -> web.Response:
    """An HTML answer with the pages' security headers."""
    return web.Response(
        text=text,
        status=status,
        content_type="text/html",
        charset="utf-8",
        headers={"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff"},
    )


def category_options(categories: CategoryMap, selected: str | None = None) -> str:
    """`<option>`s for every canonical category, `selected` pre-selected."""
    lines = []
    for name in categories.names:
        mark = " selected" if name == selected else ""
        label = html.escape(
            f"{name}: {categories.describe(name)}" if categories.describe(name) else name
        )
        lines.append(f'    <option value="{html.escape(name)}"{mark}>{label}</option>')
    return "\n".join(lines)


def report_form(categories: CategoryMap, values: dict[str, str], error: str = "") -> str:
    """The public form, pre-filled from `values` (a block page's link or a refused post)."""
    kind = values.get("kind", "report")
    category = values.get("category") or None
    canonical = categories.canonical(category) if category else None
    return render(
        "Report a site or ask for a review",
        "report.html",
        error=error,
        report_selected="" if kind == "appeal" else " selected",
        appeal_selected=" selected" if kind == "appeal" else "",
        target=html.escape(values.get("target", "")[:2048]),
        list=html.escape(values.get("list", "")[:100]),
        policy=html.escape(values.get("policy", "")[:100]),
        comment=html.escape(values.get("comment", "")[:2000]),
        category_options=category_options(categories, canonical),
    )


def form_error(exc: ValidationError, data: dict[str, str], categories: CategoryMap) -> web.Response:
    """The form again, with what was wrong, for a refused form post."""
    message = html.escape(str(exc))
    error = _template("form_error.html").substitute(message=message)
    return page(report_form(categories, data, error), status=exc.status)


def add_routes(app: web.Application, service_key: Any) -> None:
    """GET /report and /report/thanks (the review page is in the console)."""

    async def report_page(request: web.Request) -> web.Response:
        service = request.app[service_key]
        values = {k: v for k, v in request.query.items() if isinstance(v, str)}
        if "host" in values and "target" not in values:
            # The block page's link (`review_url?host=&category=&list=&policy=`): an appeal.
            values["target"] = values["host"]
            values.setdefault("kind", "appeal")
        return page(report_form(service.categories, values))

    async def thanks_page(request: web.Request) -> web.Response:
        report_id = request.query.get("id", "")
        shown = report_id if report_id.isdigit() and len(report_id) < 12 else "?"
        return page(render("Thank you", "thanks.html", id=shown))

    app.router.add_get("/report", report_page)
    app.router.add_get("/report/thanks", thanks_page)
