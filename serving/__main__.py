"""`python -m serving`: start the gRPC server (see serving.server.main)."""

import sys

from serving.server.main import main

sys.exit(main())
