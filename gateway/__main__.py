"""`python -m gateway` is the same program as the `onajimi` console script."""

from gateway.cli import main

raise SystemExit(main())
