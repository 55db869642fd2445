"""``python -m digitrec`` runs the CLI."""

from digitrec.cli.main import main

raise SystemExit(main())
