import sys

from lumina.cli import main

sys.exit(main())
