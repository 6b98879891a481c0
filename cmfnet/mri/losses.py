"""Training losses for joint reconstruction + super-resolution."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["JointLoss", "JointL1Loss"]


class JointLoss(NamedTuple):
    """Scalar loss terms: ``total`` (weighted, to optimise) and the unweighted ``rec``, ``sr``."""

    total: torch.Tensor
    rec: torch.Tensor
    sr: torch.Tensor


class JointL1Loss(nn.Module):
    """total = w_rec * L1(rec, rec_target) + w_sr * L1(sr, sr_target), mean absolute errors.

    The CMF-Net release weights the terms 1:1; T2Net used 0.2 (rec) / 0.8 (SR).

    Shapes: rec and rec_target (B, 1, H, W); sr and sr_target (B, 1, sH, sW). Returns a
    :class:`JointLoss` of scalars.
    """

    def __init__(self, w_rec: float = 1.0, w_sr: float = 1.0) -> None:
        super().__init__()
        for name, weight in (("w_rec", w_rec), ("w_sr", w_sr)):
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
                raise ValueError(f"loss.{name} must be a non-negative number, got {weight!r}")
        if w_rec == 0 and w_sr == 0:
            raise ValueError("loss.w_rec and loss.w_sr cannot both be zero")
        self.w_rec = float(w_rec)
        self.w_sr = float(w_sr)

    def forward(
        self, rec: torch.Tensor, sr: torch.Tensor, rec_target: torch.Tensor, sr_target: torch.Tensor
    ) -> JointLoss:
        for name, output, target in (("rec", rec, rec_target), ("sr", sr, sr_target)):
            if output.shape != target.shape:
                raise ValueError(
                    f"{name} output shape {tuple(output.shape)} "
                    f"!= target shape {tuple(target.shape)}"
                )
        rec_l1 = F.l1_loss(rec, rec_target)
        sr_l1 = F.l1_loss(sr, sr_target)
        return JointLoss(self.w_rec * rec_l1 + self.w_sr * sr_l1, rec_l1, sr_l1)
