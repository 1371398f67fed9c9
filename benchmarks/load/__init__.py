"""The load benchmark: filterdns against Unbound, dnsmasq and dnsdist under dnsperf.

`python -m benchmarks.load` (or `filterdns bench`) generates a test zone served by NSD as
the shared upstream, a blocklist of N names in each server's native format and dnsperf
query files, then starts each server in turn with one thread (pinned with taskset), warms
its cache, runs dnsperf for a fixed time and records queries/s, latency, lost queries,
server CPU per answered query (from /proc), RSS, start-up time and cache hit rate. It
prints a table with the ratios filterdns/peer and writes JSON and a PNG plot under
`results/`. See `--help`; `--smoke` is the few-seconds mode CI runs.
"""
