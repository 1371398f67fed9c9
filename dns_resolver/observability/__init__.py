"""Observability: metrics, the query log and its store, dnstap, newly observed domains."""
