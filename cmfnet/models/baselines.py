"""Baselines of the paper's comparison: zero-filled + bicubic, and EDSR (alone, or as the SR
stage of a reconstruct-then-super-resolve pipeline, :mod:`cmfnet.models.pipeline`).

All follow the :class:`~cmfnet.models.blocks.JointModel` contract
``forward(target_input, aux_input) -> (rec, sr)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cmfnet.models.blocks import (
    JointModel,
    ResBlock,
    UpsampleTail,
    check_positive_float,
    check_positive_int,
    conv,
)

__all__ = ["ZeroFilled", "EDSR"]


class ZeroFilled(JointModel):
    """No-learning reference: rec = the (zero-filled) target input, sr = its bicubic upsampling.

    Has no parameters (``trainable = False``): the trainer only evaluates it.

    Shapes: target_input (B, 1, H, W) -> rec (B, 1, H, W) (the input itself),
    sr (B, 1, scale*H, scale*W). ``aux_input`` is ignored.
    """

    trainable = False

    def __init__(self, scale: int = 4) -> None:
        super().__init__(scale)

    def forward(
        self, target_input: torch.Tensor, aux_input: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sr = F.interpolate(
            target_input, scale_factor=self.scale, mode="bicubic", align_corners=False
        )
        return target_input, sr


class EDSR(JointModel):
    """EDSR super-resolution of the undersampled target input (also a pipeline's SR stage).

    head conv 1 -> C (2 -> C when ``guided``: the auxiliary image is a second input channel),
    ``n_resblocks`` EDSR ResBlocks, conv3x3, global skip from the head, upsampler + conv C -> 1.
    EDSR does no reconstruction: ``rec`` is the input unchanged (only ``sr`` carries gradients).
    1,515,265 parameters at the defaults and x4 (single contrast).

    Args:
        scale: SR factor, a power of two.
        width: feature channels (64).
        n_resblocks: number of ResBlocks (16).
        res_scale: residual scaling in each ResBlock (0.1, as CMF-Net's ResBlock).
        guided: read the auxiliary contrast (†) as a second input channel.

    Shapes: target_input (B, 1, H, W) -> rec (B, 1, H, W), sr (B, 1, scale*H, scale*W);
    ``aux_input`` (B, 1, H, W) is read only when ``guided``.
    """

    def __init__(
        self,
        scale: int = 4,
        width: int = 64,
        n_resblocks: int = 16,
        res_scale: float = 0.1,
        guided: bool = False,
    ) -> None:
        super().__init__(scale)
        check_positive_int("width", width)
        check_positive_int("n_resblocks", n_resblocks)
        check_positive_float("res_scale", res_scale)
        self.guided = guided
        self.head = conv(2 if guided else 1, width)
        self.body = nn.Sequential(
            *(ResBlock(width, res_scale) for _ in range(n_resblocks)), conv(width, width)
        )
        self.sr_tail = UpsampleTail(width, scale)

    def super_resolve(self, image: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1, H, W) [+ aux (B, 1, H, W) when guided] -> (B, 1, scale*H, scale*W)."""
        if self.guided:
            if aux is None:
                raise ValueError("a guided EDSR needs the auxiliary image")
            image = torch.cat([image, aux], dim=1)
        head = self.head(image)
        return self.sr_tail(self.body(head) + head)

    def forward(
        self, target_input: torch.Tensor, aux_input: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return target_input, self.super_resolve(target_input, aux_input)
