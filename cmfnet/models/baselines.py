"""Baselines of the paper's comparison: zero-filled + bicubic, EDSR, U-Net -> EDSR.

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
    UNet,
    UpsampleTail,
    check_positive_float,
    check_positive_int,
    conv,
)

__all__ = ["ZeroFilled", "EDSR", "UNetEDSR"]


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
    """Single-contrast EDSR super-resolution of the undersampled target input.

    head conv 1 -> C, ``n_resblocks`` EDSR ResBlocks, conv3x3, global skip from the head,
    upsampler + conv C -> 1. EDSR does no reconstruction: ``rec`` is the input unchanged
    (only ``sr`` carries gradients). 1,515,265 parameters at the defaults and x4.

    Args:
        scale: SR factor, a power of two.
        width: feature channels (64).
        n_resblocks: number of ResBlocks (16).
        res_scale: residual scaling in each ResBlock (0.1, as CMF-Net's ResBlock).

    Shapes: target_input (B, 1, H, W) -> rec (B, 1, H, W), sr (B, 1, scale*H, scale*W);
    ``aux_input`` is ignored.
    """

    def __init__(
        self, scale: int = 4, width: int = 64, n_resblocks: int = 16, res_scale: float = 0.1
    ) -> None:
        super().__init__(scale)
        check_positive_int("width", width)
        check_positive_int("n_resblocks", n_resblocks)
        check_positive_float("res_scale", res_scale)
        self.head = conv(1, width)
        self.body = nn.Sequential(
            *(ResBlock(width, res_scale) for _ in range(n_resblocks)), conv(width, width)
        )
        self.sr_tail = UpsampleTail(width, scale)

    def super_resolve(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) -> (B, 1, scale*H, scale*W)."""
        head = self.head(image)
        return self.sr_tail(self.body(head) + head)

    def forward(
        self, target_input: torch.Tensor, aux_input: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return target_input, self.super_resolve(target_input)


class UNetEDSR(JointModel):
    """Sequential "reconstruct, then super-resolve" pipeline, trained end to end.

    rec = target_input + UNet(target_input [, aux_input]) (residual fastMRI U-Net; with ``use_aux``
    the auxiliary image is a second input channel), sr = EDSR(rec). Both outputs are
    supervised, so the U-Net also receives the SR loss through EDSR.

    Args:
        scale: SR factor, a power of two.
        unet_width: U-Net base channels (32, fastMRI's default).
        unet_pools: U-Net poolings (4, fastMRI's default).
        width: EDSR feature channels (64).
        n_resblocks: EDSR ResBlocks (16).
        res_scale: EDSR residual scaling (0.1).
        use_aux: feed the auxiliary contrast to the U-Net (multi-contrast variant).

    Shapes: target_input, aux_input (B, 1, H, W) -> rec (B, 1, H, W), sr (B, 1, scale*H, scale*W).
    """

    def __init__(
        self,
        scale: int = 4,
        unet_width: int = 32,
        unet_pools: int = 4,
        width: int = 64,
        n_resblocks: int = 16,
        res_scale: float = 0.1,
        use_aux: bool = False,
    ) -> None:
        super().__init__(scale)
        check_positive_int("unet_width", unet_width)
        check_positive_int("unet_pools", unet_pools)
        self.use_aux = use_aux
        self.reconstructor = UNet(2 if use_aux else 1, 1, unet_width, unet_pools)
        self.super_resolver = EDSR(scale, width, n_resblocks, res_scale)

    def forward(
        self, target_input: torch.Tensor, aux_input: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        unet_input = torch.cat([target_input, aux_input], dim=1) if self.use_aux else target_input
        rec = target_input + self.reconstructor(unet_input)
        return rec, self.super_resolver.super_resolve(rec)
