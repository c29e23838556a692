import os
import sys

# Before torch loads: idle OpenMP threads sleep instead of spinning for cores other work holds.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from train.cli import main  # noqa: E402

sys.exit(main())
