"""The block page: an HTTP server that explains, in plain words, why a site was blocked.

`recent.py` keeps what the resolver recently blocked (host -> verdict, policy), `server.py`
serves the page, `templates/` holds its HTML and `translations/` its words per language.
"""
