import sys

from botd.cli import main

sys.exit(main())
