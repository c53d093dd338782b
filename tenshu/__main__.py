"""python -m tenshu: the same as the `tenshu` command."""

from tenshu.cli import main

raise SystemExit(main())
