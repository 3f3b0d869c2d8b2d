"""``python -m optistate``: the same command as ``optistate``."""

from .cli import main

raise SystemExit(main())
