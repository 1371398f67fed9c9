"""Transports: UDP, TCP, TLS, HTTPS and QUIC listeners and PROXY v2; they frame and unframe only."""
