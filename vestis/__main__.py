from vestis.cli import main

raise SystemExit(main())
