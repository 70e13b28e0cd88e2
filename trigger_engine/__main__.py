"""python -m trigger_engine: the command line."""

from trigger_engine.cli.main import main

raise SystemExit(main())
