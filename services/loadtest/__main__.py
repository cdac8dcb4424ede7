import sys

from services.loadtest.cli import main

sys.exit(main())
