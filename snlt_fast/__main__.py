import sys

from snlt_fast.cli import main

sys.exit(main())
