from lightning_ldam.cli import main

raise SystemExit(main())
