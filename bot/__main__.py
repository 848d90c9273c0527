"""``python -m bot`` runs the hybridbot command line."""
from .cli import main

raise SystemExit(main())
