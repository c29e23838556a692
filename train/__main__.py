import os
import sys

# Before torch loads: idle OpenMP threads sleep instead of spinning for cores other work holds.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from geomodel.runtime import keep_freed_memory  # noqa: E402
from train.cli import main  # noqa: E402

keep_freed_memory()  # big batches reuse freed memory instead of faulting in fresh pages (see geomodel.runtime)
sys.exit(main())
