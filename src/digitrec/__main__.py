"""``python -m digitrec`` runs the CLI."""

from .cli import main

raise SystemExit(main())
