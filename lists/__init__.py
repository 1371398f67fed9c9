"""Bundled default lists and the category map (data only; installed as filterdns.lists)."""
