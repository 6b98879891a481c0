"""Silence third-party messages that mean nothing to a cmfnet user; real warnings stay.

Each filter names one message and why it is noise here:

- Lightning's tip advertising its LitLogger service, printed at every trainer start;
- torch's FutureWarning that Lightning's ``_pytree`` helper still uses ``LeafSpec`` (Lightning's
  code, not ours, and harmless);
- Lightning's "Total FLOPs: 0" is avoided by ``trainer.enable_model_summary: false``: cmfnet
  logs its own parameter and MAC counts (``cmfnet.models.summary``);
- W&B's "anonymous setting has no effect" is avoided in :class:`cmfnet.lit.loggers.WandbRunLogger`;
- Lightning's hint that ``srun`` is on the PATH but not used: cmfnet chose not to use it (a
  run outside SLURM, or ``launcher=slurm``, whose jobs do run under srun); the hint also
  echoes the command line, secret overrides included;
- Lightning's advice to log epoch metrics with ``sync_dist=True`` under DDP: cmfnet's
  validation and test metrics are computed from every rank's slices, gathered before they are
  logged (:class:`cmfnet.lit.module.JointRecSRModule`), so each rank already logs the same
  value;
- alembic's "setup plugin ..." lines, one per plugin, each time Optuna opens a search's SQLite
  study (``hparams_search``).
"""

from __future__ import annotations

import logging
import warnings

NOISE_LOG_MESSAGES = {
    "lightning.pytorch.utilities.rank_zero": ("litlogger",),
    "alembic.runtime.plugins": ("setup plugin",),
}
NOISE_WARNINGS = (r"`isinstance\(treespec, LeafSpec\)` is deprecated",)
#: UserWarnings (Lightning's PossibleUserWarning is one) that are noise here.
NOISE_USER_WARNINGS = (
    r"The `srun` command is available on your system but is not used",
    r"It is recommended to use `self.log\('(val|test)/.*sync_dist=True",
)


class _DropMessages(logging.Filter):
    """Drop log records whose message contains one of ``fragments``."""

    def __init__(self, fragments: tuple[str, ...]):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def silence_third_party_noise() -> None:
    """Install the filters above (idempotent)."""
    for name, fragments in NOISE_LOG_MESSAGES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(fragments))
    for message in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)
    for message in NOISE_USER_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
