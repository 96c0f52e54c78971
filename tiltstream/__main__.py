import sys

from tiltstream.cli import main

sys.exit(main())
