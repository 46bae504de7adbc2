from zeta_router.cli import main

raise SystemExit(main())
