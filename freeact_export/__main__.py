import sys

from freeact_export.cli import main

sys.exit(main())
