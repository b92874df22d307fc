import sys

from importd.cli import main

sys.exit(main())
