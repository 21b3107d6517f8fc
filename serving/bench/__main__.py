"""`python -m serving.bench`: the server against in-process calls (see serving.bench.throughput)."""

import sys

from serving.bench.throughput import main

sys.exit(main())
