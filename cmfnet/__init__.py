"""cmfnet: joint MRI reconstruction and super-resolution guided by a second contrast.

Importing the package registers the OmegaConf resolvers the configs use
(:data:`cmfnet.runs.resolvers.RESOLVERS`), so a config composed from ``conf/`` resolves and
instantiates in any process, a notebook included."""

import time

#: Wall-clock time at which the package was first imported (the start of a run, for timings).
STARTED_AT = time.time()

from cmfnet.runs.resolvers import register_resolvers  # noqa: E402  (after the start time)

__version__ = "0.1.0"

register_resolvers()
