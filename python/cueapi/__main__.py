"""``python -m cueapi``: the ``cueapi`` command."""

from .cli import main

raise SystemExit(main())
