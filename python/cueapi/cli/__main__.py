"""``python -m cueapi.cli``."""

from . import main

raise SystemExit(main())
