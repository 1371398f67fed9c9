"""Subscribers (docs/subscribers.md): per-subscriber policies for ISPs.

- `subscribers.store`: the database (SQLite or PostgreSQL) and its change log;
- `subscribers.service`: the serving table (dns_resolver/fast/_subtable) kept current from it;
- `subscribers.api`, `subscribers.cli`: the provisioning API and `filterdns subscribers`;
- `subscribers.radius`: RADIUS accounting from the access gateways.
"""
