"""CMF-Net: Cross-contrast Mutual Fusion Network (Ding et al., Pattern Recognition 2024).

Joint reconstruction (de-aliasing at LR size) and super-resolution of an undersampled
target contrast, guided by a fully sampled auxiliary contrast. docs/model.md describes it
block by block, with parameter counts.
"""

from __future__ import annotations

from typing import Sequence

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

__all__ = [
    "MultiContrastAggregation",
    "ConcatFusion",
    "ChannelBottleneck",
    "MutualFusion",
    "CMFNet",
]

FUSIONS = ("mfa", "concat")
#: how MMF updates each branch: the paper's gate, or our ungated variant
MMF_UPDATES = ("gated", "additive")


class MultiContrastAggregation(nn.Module):
    """MFA: fuse auxiliary features into target features at several receptive fields.

    For each kernel size k: A_k = conv_k(A) (C -> C), C_k = cat(A_k, T) (2C channels),
    G_k = C_k * sigmoid(C_k). The G_k are summed and projected by a 3x3 conv 2C -> C.
    The output replaces T (no residual). 217,344 parameters at C = 64, kernels (1, 3, 5).

    Shapes: aux, target (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, width: int, kernel_sizes: Sequence[int] = (1, 3, 5)) -> None:
        super().__init__()
        self.aux_convs = nn.ModuleList(conv(width, width, k) for k in kernel_sizes)
        self.project = conv(2 * width, width)

    def forward(self, aux: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        gated = sum(
            F.silu(torch.cat([aux_conv(aux), target], dim=1)) for aux_conv in self.aux_convs
        )
        return self.project(gated)


class ConcatFusion(nn.Module):
    """Plain fusion used by the "without MFA" ablation: conv3x3(cat(aux, target)), 2C -> C.

    Shapes: aux, target (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.project = conv(2 * width, width)

    def forward(self, aux: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([aux, target], dim=1))


class ChannelBottleneck(nn.Sequential):
    """BN(conv1x1 C/r -> C (ReLU(BN(conv1x1 C -> C/r (x))))), (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, width: int, reduced: int) -> None:
        super().__init__(
            nn.Conv2d(width, reduced, kernel_size=1),
            nn.BatchNorm2d(reduced),
            nn.ReLU(inplace=True),
            nn.Conv2d(reduced, width, kernel_size=1),
            nn.BatchNorm2d(width),
        )


class MutualFusion(nn.Module):
    """MMF: attention-gated exchange between the SR feature S and the rec feature R.

    Per branch X in {S, R} (separate weights): local L_X = bottleneck(X), global
    G_X = bottleneck(avgpool(X)) on the 1x1 pooled map, X' = X * sigmoid(L_X + G_X).
    Shared message M = conv3x3(cat(L_S, L_R)) + conv3x3(cat(G_S, G_R)) (the global term is
    broadcast over the image). Returns (S' + M, R' + M). 156,736 parameters at C = 64, r = 4.

    ``update="additive"`` (our variant, not the paper's: ``model=cmfnet_mmf_additive``) drops
    the gate: X' = X, so each branch returns X + M and features reach the tails without passing
    through six multiplicative gates. Same parameters.

    The global bottleneck's BatchNorm sees one value per channel and sample, so training
    needs a batch of at least 2; a batch of 1 in training raises a ``ValueError`` saying so
    (evaluation mode uses running statistics and accepts any batch).

    Shapes: sr, rec (B, C, H, W) -> two (B, C, H, W).
    """

    def __init__(self, width: int, reduction: int = 4, update: str = "gated") -> None:
        super().__init__()
        if update not in MMF_UPDATES:
            raise ValueError(f"model.mmf_update must be one of {MMF_UPDATES}, got {update!r}")
        self.gated = update == "gated"
        reduced = width // reduction
        self.sr_local = ChannelBottleneck(width, reduced)
        self.sr_global = ChannelBottleneck(width, reduced)
        self.rec_local = ChannelBottleneck(width, reduced)
        self.rec_global = ChannelBottleneck(width, reduced)
        self.local_message = conv(2 * width, width)
        self.global_message = conv(2 * width, width)

    def forward(self, sr: torch.Tensor, rec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.training and sr.shape[0] < 2:
            raise ValueError(
                "MutualFusion needs batch size >= 2 in training (BatchNorm on pooled 1x1 "
                "features); set data.batch_size >= 2 and drop the last incomplete batch"
            )
        sr_local = self.sr_local(sr)
        sr_global = self.sr_global(F.adaptive_avg_pool2d(sr, 1))
        rec_local = self.rec_local(rec)
        rec_global = self.rec_global(F.adaptive_avg_pool2d(rec, 1))
        message = self.local_message(torch.cat([sr_local, rec_local], dim=1)) + self.global_message(
            torch.cat([sr_global, rec_global], dim=1)
        )
        if self.gated:
            sr = sr * torch.sigmoid(sr_local + sr_global)
            rec = rec * torch.sigmoid(rec_local + rec_global)
        return sr + message, rec + message


class CMFNet(JointModel):
    """CMF-Net and its ablations; forward(target_input, aux_input) -> (rec, sr).

    Stage 1 (``n_fusion_levels`` levels): a0 = head_aux(aux), a_k = ResBlock(a_{k-1});
    t0 = head_target(target), f_k = fusion_k(a_k, ResBlock(f_{k-1})) with f_0 = t0.
    Stage 2 (``n_branch_steps`` steps), from r0 = s0 = f_last:
    r_i = RecBlock_i(r_{i-1}) (a U-Net), s_i = ResBlock_i(s_{i-1}), (s_i, r_i) = MMF_i(s_i, r_i).
    Outputs with the long skip t0: rec = rec_tail(r + t0), sr = sr_tail(s + t0).

    Full size at x4 (defaults): 47,898,498 trainable parameters; ~80 GMACs per sample at
    80x80 input.

    Args:
        scale: SR factor, a power of two (2 or 4 in the paper).
        width: feature channels of heads, ResBlocks, fusions and MMF (64).
        unet_width: base channels of each RecBlock U-Net (128).
        unet_pools: poolings of each RecBlock U-Net (2).
        n_fusion_levels: stage-1 levels (3 MFA modules).
        n_branch_steps: stage-2 steps (6 RecBlock / ResBlock / MMF triples).
        mmf_reduction: MMF bottleneck reduction, width -> width / mmf_reduction (4: 64 -> 16).
        res_scale: residual scaling of every EDSR ResBlock (0.1).
        mfa_kernel_sizes: kernel sizes of the MFA auxiliary convolutions ((1, 3, 5)).
        fusion: "mfa" (the paper) or "concat" (ablation: conv3x3 of cat(a_k, t)).
        mutual_fusion: use MMF between the branches (False: ablation, no exchange).
        mmf_update: how MMF updates each branch: "gated" (the paper: X * sigmoid(L + G) + M)
            or "additive" (our variant: X + M, see :class:`MutualFusion`).
        use_aux: use the auxiliary contrast (False: single-contrast ablation; the aux head,
            aux ResBlocks and fusions are not built, ``fusion`` is ignored, and ``aux_input``
            passed to forward is ignored).

    Shapes: target_input, aux_input (B, 1, H, W) -> rec (B, 1, H, W), sr (B, 1, scale*H, scale*W).
    Training with ``mutual_fusion`` needs a batch of at least 2 (see :class:`MutualFusion`).
    """

    def __init__(
        self,
        scale: int = 4,
        width: int = 64,
        unet_width: int = 128,
        unet_pools: int = 2,
        n_fusion_levels: int = 3,
        n_branch_steps: int = 6,
        mmf_reduction: int = 4,
        res_scale: float = 0.1,
        mfa_kernel_sizes: Sequence[int] = (1, 3, 5),
        fusion: str = "mfa",
        mutual_fusion: bool = True,
        mmf_update: str = "gated",
        use_aux: bool = True,
    ) -> None:
        super().__init__(scale)
        for name, value in [
            ("width", width),
            ("unet_width", unet_width),
            ("unet_pools", unet_pools),
            ("n_fusion_levels", n_fusion_levels),
            ("n_branch_steps", n_branch_steps),
            ("mmf_reduction", mmf_reduction),
        ]:
            check_positive_int(name, value)
        check_positive_float("res_scale", res_scale)
        if fusion not in FUSIONS:
            raise ValueError(f"model.fusion must be one of {FUSIONS}, got {fusion!r}")
        if mutual_fusion and width % mmf_reduction:
            raise ValueError(
                f"model.width ({width}) must be divisible by model.mmf_reduction ({mmf_reduction})"
            )
        mfa_kernel_sizes = tuple(mfa_kernel_sizes)
        if not mfa_kernel_sizes or any(
            not isinstance(k, int) or k < 1 or k % 2 == 0 for k in mfa_kernel_sizes
        ):
            raise ValueError(
                f"model.mfa_kernel_sizes must be a non-empty list of odd positive integers, "
                f"got {list(mfa_kernel_sizes)}"
            )
        self.use_aux = use_aux

        self.head_target = conv(1, width)
        self.target_blocks = nn.ModuleList(
            ResBlock(width, res_scale) for _ in range(n_fusion_levels)
        )
        if use_aux:
            self.head_aux = conv(1, width)
            self.aux_blocks = nn.ModuleList(
                ResBlock(width, res_scale) for _ in range(n_fusion_levels)
            )
            self.fusions = nn.ModuleList(
                MultiContrastAggregation(width, mfa_kernel_sizes)
                if fusion == "mfa"
                else ConcatFusion(width)
                for _ in range(n_fusion_levels)
            )

        self.rec_blocks = nn.ModuleList(
            UNet(width, width, unet_width, unet_pools) for _ in range(n_branch_steps)
        )
        self.sr_blocks = nn.ModuleList(ResBlock(width, res_scale) for _ in range(n_branch_steps))
        self.mutual_fusions = (
            nn.ModuleList(
                MutualFusion(width, mmf_reduction, mmf_update) for _ in range(n_branch_steps)
            )
            if mutual_fusion
            else None
        )

        self.rec_tail = conv(width, 1)
        self.sr_tail = UpsampleTail(width, scale)

    def fuse_contrasts(
        self, target_input: torch.Tensor, aux_input: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stage 1: (B, 1, H, W) x 2 -> (fused feature f, target head feature t0), (B, C, H, W)."""
        head = self.head_target(target_input)
        fused = head
        if self.use_aux:
            aux = self.head_aux(aux_input)
            for aux_block, target_block, fusion in zip(
                self.aux_blocks, self.target_blocks, self.fusions
            ):
                aux = aux_block(aux)
                fused = fusion(aux, target_block(fused))
        else:
            for target_block in self.target_blocks:
                fused = target_block(fused)
        return fused, head

    def forward(
        self, target_input: torch.Tensor, aux_input: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        fused, head = self.fuse_contrasts(target_input, aux_input)
        rec, sr = fused, fused
        for step, (rec_block, sr_block) in enumerate(zip(self.rec_blocks, self.sr_blocks)):
            rec = rec_block(rec)
            sr = sr_block(sr)
            if self.mutual_fusions is not None:
                sr, rec = self.mutual_fusions[step](sr, rec)
        return self.rec_tail(rec + head), self.sr_tail(sr + head)
