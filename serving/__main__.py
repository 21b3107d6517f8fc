"""`python -m serving`: start the gRPC server (see serving.server)."""

import sys

from serving.server import main

sys.exit(main())
