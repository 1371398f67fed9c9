"""The report queue's words and sizes, apart from its tables.

They live here, not in `reports.models`, so that the command line can offer them (token
roles, name lengths) without importing SQLAlchemy, which costs most of a CLI start-up.
"""

KINDS = ("report", "appeal", "lead")
PUBLIC_KINDS = ("report", "appeal")  # what the public may submit; leads come from the resolver
SOURCES = ("public", "observed")  # who put an item in the queue (observed: docs/leads.md)
STATUSES = ("open", "decided")
ACTIONS = ("block", "allow", "reject")
OVERRIDE_ACTIONS = ("block", "allow")
# viewer may look (the console's pages, checks) but change nothing.
ROLES = ("viewer", "reviewer", "admin")

# Column sizes: the API's limits (reports.submission) fit inside them with room to spare.
TARGET_LEN = 2048
HOST_LEN = 253
COMMENT_LEN = 2000
NAME_LEN = 100
REASON_LEN = 2000
SOURCE_LEN = 16
