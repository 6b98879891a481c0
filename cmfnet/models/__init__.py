"""Networks of cmfnet: CMF-Net, its ablations and the baselines, plus ``build_model``.

Every model follows the :class:`~cmfnet.models.blocks.JointModel` contract
``forward(target_input, aux_input) -> (rec, sr)``. Hydra configs live in ``conf/model/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hydra.utils
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cmfnet.models.baselines import EDSR, ZeroFilled
from cmfnet.models.blocks import JointModel
from cmfnet.models.cmfnet import CMFNet, MultiContrastAggregation, MutualFusion
from cmfnet.models.mtrans import MTransReconstruction, MTransSuperResolution
from cmfnet.models.pipeline import (
    MTransReconstructor,
    ReconstructThenSuperResolve,
    ResidualUNet,
    SwinIRSuperResolver,
    UNetEDSR,
)
from cmfnet.models.summary import ModelSummary, format_summary, model_summary
from cmfnet.models.swinir import SwinIR
from cmfnet.models.t2net import T2Net

__all__ = [
    "JointModel",
    "CMFNet",
    "MultiContrastAggregation",
    "MutualFusion",
    "ZeroFilled",
    "EDSR",
    "UNetEDSR",
    "ReconstructThenSuperResolve",
    "ResidualUNet",
    "MTransReconstructor",
    "SwinIRSuperResolver",
    "SwinIR",
    "MTransReconstruction",
    "MTransSuperResolution",
    "T2Net",
    "build_model",
    "ModelSummary",
    "model_summary",
    "format_summary",
]


def build_model(model_cfg: DictConfig | Mapping[str, Any]) -> nn.Module:
    """Instantiate a saved run's ``model`` config (``_target_`` plus keyword arguments), as a
    checkpoint or config.yaml holds it; a freshly composed config is built with
    ``hydra.utils.instantiate(cfg.model)``.

    Interpolations such as ``scale: ${scale}`` and ``width: ${scaled_width:64}`` are resolved
    against the node's root config; a key that earlier layouts kept in the model node is dropped.
    """
    if isinstance(model_cfg, DictConfig):
        cfg = OmegaConf.to_container(model_cfg, resolve=True)
    else:
        cfg = dict(model_cfg)
    if "defaults" in cfg:
        raise ValueError(
            "model config still has a 'defaults' list: compose it with Hydra before building"
        )
    # Run configs saved before T2Net's weights moved to conf/loss/recipe/ carry them here.
    cfg.pop("loss_weights", None)
    return hydra.utils.instantiate(cfg)
