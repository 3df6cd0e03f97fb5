import sys

from camfast.cli import main

sys.exit(main())
