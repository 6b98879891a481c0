"""cmfnet: joint MRI reconstruction and super-resolution guided by a second contrast."""

import time

__version__ = "0.1.0"

#: Wall-clock time at which the package was first imported (the start of a run, for timings).
STARTED_AT = time.time()
