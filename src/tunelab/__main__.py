"""`python -m tunelab …` (and `torchrun … -m tunelab run recipe.yaml` on each node of a multi-node run)."""

import sys

from tunelab.cli import main

sys.exit(main())
