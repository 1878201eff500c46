"""`python -m lumina.v2a --video IN.mp4 --out OUT.mp4 ...` (the same as `python -m lumina v2a`)."""

import sys

from lumina.v2a.cli import main

sys.exit(main())
