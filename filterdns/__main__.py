"""`python -m filterdns`: the same as the `filterdns` command."""

from filterdns.cli import main

raise SystemExit(main())
