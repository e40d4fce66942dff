"""`python -m flows ...`: the same command line as the `optiflow` console script."""

from flows.cli import main

raise SystemExit(main())
