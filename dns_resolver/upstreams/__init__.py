"""Upstreams: forwarding over UDP/TCP, DoT and DoH, per-domain rules, and forwarding from C."""
