"""What a config node is given when ``hydra.utils.instantiate`` builds it, beyond what the node
holds: the one place where objects built from other nodes, and facts of the run, reach a
``_target_``. Every object of a run is built as ``hydra.utils.instantiate(cfg.<node>, ...)``
(see :func:`cmfnet.train.train`); the node's own config is never rewritten.

- ``data``: ``mask_func`` (built from the ``mask`` node), the run's ``scale`` and ``seed``.
  Interpolating ``mask_func: ${mask}`` into ``conf/data`` instead would copy the whole mask
  config into ``data`` in every saved config.yaml, checkpoint and W&B config.
- ``module``: ``model`` (the ``model`` node after the ``performance`` node), ``loss`` and
  ``run_config`` (the resolved run config, recorded in checkpoints). Passed to the partial that
  instantiating ``module`` gives: passed to ``instantiate`` itself, the config would be merged
  into the node and every ``_target_`` in it built.
- ``trainer``: ``logger`` and ``callbacks`` (the ``logger`` and ``callbacks`` groups),
  ``plugins`` (the node's own, then :class:`~cmfnet.runs.checkpoint_io.AtomicCheckpointIO`) and
  ``default_root_dir`` (the run folder).

``model``, ``loss``, ``performance``, ``mask`` and each logger and callback take nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import hydra
from omegaconf import DictConfig

from cmfnet.runs.checkpoint_io import AtomicCheckpointIO


def data_kwargs(cfg: DictConfig) -> dict[str, Any]:
    """The ``data`` node's injections from the composed run config ``cfg``."""
    return {"mask_func": hydra.utils.instantiate(cfg.mask), "scale": cfg.scale, "seed": cfg.seed}


def module_kwargs(model: Any, loss: Any, run_config: Optional[dict]) -> dict[str, Any]:
    """The ``module`` partial's arguments: the built model and loss, the resolved run config
    (None where no checkpoint is kept, as in ``cmfnet bench``)."""
    return {"model": model, "loss": loss, "run_config": run_config}


def trainer_plugins(trainer_cfg: DictConfig) -> list:
    """The trainer's plugins: those its config names (``launcher=slurm``'s cluster environment)
    and, always, :class:`~cmfnet.runs.checkpoint_io.AtomicCheckpointIO`, so that no kill leaves
    a half-written checkpoint."""
    return [*hydra.utils.instantiate(trainer_cfg.get("plugins") or []), AtomicCheckpointIO()]


def trainer_kwargs(cfg: DictConfig, loggers: list, callbacks: list, out: Path) -> dict[str, Any]:
    """The ``trainer`` node's injections: the built loggers (False for none, as Lightning wants)
    and callbacks, the plugins (:func:`trainer_plugins`) and the run folder ``out``."""
    return {
        "logger": loggers or False,
        "callbacks": callbacks,
        "plugins": trainer_plugins(cfg.trainer),
        "default_root_dir": str(out),
    }
