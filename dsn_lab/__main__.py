from dsn_lab.cli import main

raise SystemExit(main())
