"""T2Net: Task Transformer Network for joint MRI reconstruction and SR (Feng et al., MICCAI 2021).

Single-contrast joint baseline: an SR branch and a reconstruction branch of EDSR ResBlocks;
after every block a hard-attention task transformer moves reconstruction features into the
SR branch.
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

__all__ = ["HardAttentionTransfer", "T2Net"]


def _gather_columns(patches: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Pick patch columns per sample: (B, D, N) and (B, M) int64 -> (B, D, M)."""
    return torch.gather(patches, 2, index.unsqueeze(1).expand(-1, patches.shape[1], -1))


class HardAttentionTransfer(nn.Module):
    """Parameter-free hard-attention search and transfer (T2Net's task transformer core).

    Q, K, V are unfolded into 3x3 patches (columns of length 9C); Q and K columns are
    L2-normalised. The relevance R[j, i] = <K_j, Q_i> over all pixel pairs gives, per query
    pixel i, the hard index H_i = argmax_j R[j, i] and the soft weight S_i = max_j R[j, i].
    The transferred map T is V's patches gathered at H, folded back and divided by 9.

    The argmax is computed without gradient, ``chunk`` query columns at a time (0: all at
    once), so the (H*W) x chunk relevance block is the only quadratic buffer and is never
    kept for backward; S is then recomputed as <K_H, Q> with gradient, which equals the max
    and has the same gradient as differentiating through it.

    Shapes: query, key, value (B, C, H, W) -> soft weight (B, 1, H, W), transferred (B, C, H, W).
    """

    def __init__(self, chunk: int = 0, patch_size: int = 3) -> None:
        super().__init__()
        self.chunk = chunk
        self.patch_size = patch_size

    def _unfold(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C*p*p, H*W) patches with zero padding."""
        return F.unfold(x, kernel_size=self.patch_size, padding=self.patch_size // 2)

    def best_keys(self, query_patches: torch.Tensor, key_patches: torch.Tensor) -> torch.Tensor:
        """Hard index: (B, D, Nq), (B, D, Nk) normalised patches -> (B, Nq) argmax over keys."""
        n_queries = query_patches.shape[-1]
        chunk = self.chunk or n_queries
        keys_t = key_patches.transpose(1, 2)
        with torch.no_grad():
            return torch.cat(
                [
                    torch.bmm(keys_t, query_patches[..., start : start + chunk]).argmax(dim=1)
                    for start in range(0, n_queries, chunk)
                ],
                dim=1,
            )

    def forward(
        self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        batch, _, height, width = query.shape
        query_patches = F.normalize(self._unfold(query), dim=1)
        key_patches = F.normalize(self._unfold(key), dim=1)
        index = self.best_keys(query_patches, key_patches)
        soft = (_gather_columns(key_patches, index) * query_patches).sum(dim=1)
        transferred = F.fold(
            _gather_columns(self._unfold(value), index),
            output_size=(height, width),
            kernel_size=self.patch_size,
            padding=self.patch_size // 2,
        ) / (self.patch_size**2)
        return soft.view(batch, 1, height, width), transferred


class T2Net(JointModel):
    """T2Net, joint single-contrast reconstruction + SR;
    forward(target_input, aux_input) -> (rec, sr).

    Two branches from the target input, each head conv (k x k, 1 -> C) + ``n_resblocks``
    EDSR ResBlocks + a 3x3 body-end conv, with a long skip from its head. After block i the
    task transformer takes Q from the SR feature, K = V from the rec feature, and updates
    ``sr = sr + conv1x1(cat(sr, T)) * S``. Tails: rec = conv1x1(C -> 1) + target_input,
    sr = upsampler + conv3x3(C -> 1).

    Parameters at the defaults: 1,620,994 at x4, 1,473,282 at x2 (paper: 1.62 M at x4).
    Departures from the authors' release: the release declares each branch's body-end conv
    but never applies it (the 1.62 M counts it); here it is applied, as in EDSR. The rec
    output gets a skip from the input (the release has none).

    Memory and compute: the search is quadratic in pixels. The relevance matrix is
    (H*W)^2 floats per sample and per module: 41.0 M floats = 164 MB (fp32) at 80x80,
    9.83 M = 39 MB at 56x56, 655 M = 2.6 GB at 160x160; it costs (H*W)^2 * 9C MACs per
    module (23.6 G at 80x80, C = 64; 8 modules). ``attention_chunk`` > 0 bounds the buffer to
    (H*W) * attention_chunk floats per sample; nothing quadratic is kept for backward.

    Args:
        scale: SR factor, a power of two.
        width: feature channels (64).
        n_resblocks: ResBlocks per branch, one task transformer after each (8).
        res_scale: residual scaling of the ResBlocks (0.1).
        head_kernel_size: kernel of the head convs (5, as the release).
        attention_chunk: query pixels per relevance block (0: all at once).

    Shapes: target_input (B, 1, H, W) -> rec (B, 1, H, W), sr (B, 1, scale*H, scale*W);
    ``aux_input`` is ignored.
    """

    def __init__(
        self,
        scale: int = 4,
        width: int = 64,
        n_resblocks: int = 8,
        res_scale: float = 0.1,
        head_kernel_size: int = 5,
        attention_chunk: int = 0,
    ) -> None:
        super().__init__(scale)
        check_positive_int("width", width)
        check_positive_int("n_resblocks", n_resblocks)
        check_positive_float("res_scale", res_scale)
        if check_positive_int("head_kernel_size", head_kernel_size) % 2 == 0:
            raise ValueError(f"model.head_kernel_size must be odd, got {head_kernel_size}")
        if (
            isinstance(attention_chunk, bool)
            or not isinstance(attention_chunk, int)
            or attention_chunk < 0
        ):
            raise ValueError(
                f"model.attention_chunk must be an integer >= 0, got {attention_chunk!r}"
            )

        self.sr_head = conv(1, width, head_kernel_size)
        self.rec_head = conv(1, width, head_kernel_size)
        self.sr_blocks = nn.ModuleList(ResBlock(width, res_scale) for _ in range(n_resblocks))
        self.rec_blocks = nn.ModuleList(ResBlock(width, res_scale) for _ in range(n_resblocks))
        self.attention = HardAttentionTransfer(attention_chunk)
        self.transfer_convs = nn.ModuleList(
            nn.Conv2d(2 * width, width, kernel_size=1) for _ in range(n_resblocks)
        )
        self.sr_body_end = conv(width, width)
        self.rec_body_end = conv(width, width)
        self.rec_tail = nn.Conv2d(width, 1, kernel_size=1)
        self.sr_tail = UpsampleTail(width, scale)

    def forward(
        self, target_input: torch.Tensor, aux_input: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        sr_head = self.sr_head(target_input)
        rec_head = self.rec_head(target_input)
        sr, rec = sr_head, rec_head
        for sr_block, rec_block, transfer_conv in zip(
            self.sr_blocks, self.rec_blocks, self.transfer_convs
        ):
            sr = sr_block(sr)
            rec = rec_block(rec)
            soft, transferred = self.attention(query=sr, key=rec, value=rec)
            sr = sr + transfer_conv(torch.cat([sr, transferred], dim=1)) * soft
        rec = self.rec_tail(self.rec_body_end(rec) + rec_head) + target_input
        sr = self.sr_tail(self.sr_body_end(sr) + sr_head)
        return rec, sr
