"""`python -m gfn_fast ...` is the `gfn-fast` command."""

from gfn_fast.train.cli import main

raise SystemExit(main())
