from trigger_engine.cli import main

raise SystemExit(main())
