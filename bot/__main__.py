"""``python -m bot`` is the ``medcrowd`` command."""

from bot.cli import main

raise SystemExit(main())
