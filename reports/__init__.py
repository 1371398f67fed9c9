"""Public reports and appeals, the review queue, local overrides and the admin API.

See docs/reports-api.md. Modules: `models` (tables), `migrations/` (Alembic), `store`
(SQLite/PostgreSQL), `submission` (validation), `tokens`, `ratelimit`, `overrides`
(the override file and matcher), `service` (decisions, audit, resolver hooks), `api`
(aiohttp routes), `openapi`, `pages` + `templates/` (report form, review page), `server`
(the listener in `filterdns serve`), `export` (audit CSV/JSON), `cli` (`filterdns admin`).
"""
