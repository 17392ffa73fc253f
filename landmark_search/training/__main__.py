"""One process of `landmark train --nproc N` (torchrun starts N of them): `python -m landmark_search.training JOB`."""

import sys

from .launch import rank_main

sys.exit(rank_main(sys.argv[1:]))
