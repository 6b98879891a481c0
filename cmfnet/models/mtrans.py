"""MTrans: multi-modal transformer for accelerated MR imaging (Feng et al., IEEE TMI 2023).

Re-implemented from the description of the authors' code (``chunmeifeng/MTrans``), three models:
the single-contrast reconstruction model, the cross-attention multi-contrast reconstruction
model and the cross-attention multi-contrast SR model.

Common pattern: a convolutional head (3 x [conv3x3, BatchNorm, ReLU]) per contrast; the feature
map is cut into P x P patches that are flattened (no linear patch projection, so a token has
P*P*C features) and given a learned position embedding (drawn from N(0, 1)); a transformer; the
tokens are folded back into a map; a tail maps C channels to one. There is no global residual:
the tails' outputs are the predictions. The cross models run the target contrast at a fine patch
size (the authors' P1 = 8) and the guide at a coarse one (P2 = 16); each layer of the cross
transformer updates the target tokens by attending to the guide tokens, then the guide tokens
by attending to the updated target tokens. Both branches are decoded: the target output is the
prediction, and the authors train the guide output with an extra L1 loss against the guide
input (weight 1, ``USE_CL1_LOSS``). Without that loss the last layer's guide update gets no
gradient; :meth:`MTransReconstruction.forward_with_guide` and
:meth:`MTransSuperResolution.forward_with_guide` return both outputs for it.

No dropout (the authors' rates are all 0). Initialisation as the authors': PyTorch defaults,
position embeddings from N(0, 1), and in the single model's transformer a truncated normal.

The authors feed instance-normalised magnitudes ((x - mean) / std per slice, clamped to +-6).
Learned position embeddings fix the image size: each model takes ``input_size`` x
``input_size`` images only. Parameter counts at the authors' configs (``MTRANS_PRESETS``):
single reconstruction at 320: 672,887,601; cross reconstruction at 320: 783,693,410; cross SR
at LR 160, x2: 782,474,018 (x4: 787,398,498).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cmfnet.models.blocks import (
    UpsampleTail,
    check_positive_float,
    check_positive_int,
    check_scale,
)
from cmfnet.models.mtrans_blocks import ConvHead, CrossBranches, PatchEmbedding, Transformer

__all__ = [
    "MTRANS_PRESETS",
    "MTransReconstruction",
    "MTransSuperResolution",
]


_AUTHORS = dict(
    head_channels=16, fine_patch_size=8, coarse_patch_size=16, depth=4, num_heads=4, mlp_ratio=3.0
)


#: Keyword arguments of :class:`MTransReconstruction` / :class:`MTransSuperResolution`. They hold
#: the architecture only; ``input_size``, ``guided`` and ``scale`` come from the caller. The three
#: authors' configs share the same values and differ only in model, INPUT_SIZE and SCALE.
MTRANS_PRESETS: dict[str, dict] = {
    # config/reconstruction_single.py: MTransReconstruction(320, guided=False); HEAD_HIDDEN_DIM
    # 16, PATCH_SIZE 16 (our coarse_patch_size), TRANSFORMER_DEPTH 4, 4 heads, MLP ratio 3.
    "reconstruction_single": dict(_AUTHORS),
    # config/reconstruction_multi_cross.py: MTransReconstruction(320, guided=True); P1 8, P2 16,
    # CTDEPTH 4, otherwise as above.
    "reconstruction_multi_cross": dict(_AUTHORS),
    # config/sr_multi_cross.py: MTransSuperResolution(160, scale=2); INPUT_SIZE 160 is the LR size.
    "sr_multi_cross": dict(_AUTHORS),
    # Reduced for CPU training at 40x40 and 80x80 LR inputs. Relative to the authors: head
    # channels 16 -> 4, patch sizes (8, 16) -> (4, 8) so that 40 is tiled, depth 4 -> 2; heads
    # (4) and MLP ratio (3) kept. Token widths 4*4*4 = 64 and 4*8*8 = 256 instead of 1024 and
    # 4096. The single model patches at 8 (width 256). 1.32-1.97 M parameters (the position
    # embeddings grow with the image size); forward+backward of batch 4 at 40x40 on one core
    # takes 0.02-0.2 s.
    "cpu": dict(
        head_channels=4, fine_patch_size=4, coarse_patch_size=8, depth=2, num_heads=4, mlp_ratio=3.0
    ),
}


def _check_architecture(
    head_channels: int,
    fine_patch_size: int,
    coarse_patch_size: int,
    depth: int,
    num_heads: int,
    mlp_ratio: float,
    patch_sizes: dict[str, int],
) -> None:
    """Validate the shared hyperparameters; ``patch_sizes`` names the patch sizes in use."""
    for name, value in [
        ("head_channels", head_channels),
        ("fine_patch_size", fine_patch_size),
        ("coarse_patch_size", coarse_patch_size),
        ("depth", depth),
        ("num_heads", num_heads),
    ]:
        check_positive_int(name, value)
    check_positive_float("mlp_ratio", mlp_ratio)
    for name, patch in patch_sizes.items():
        width = head_channels * patch**2
        if width % num_heads:
            raise ValueError(
                f"model.num_heads ({num_heads}) must divide the token width "
                f"model.head_channels * model.{name}^2 = {width}"
            )
        if int(width * mlp_ratio) < 1:
            raise ValueError(f"model.mlp_ratio {mlp_ratio} leaves no MLP hidden unit at {width}")


def _check_tiling(what: str, size: int, name: str, patch: int) -> None:
    """Raise unless the ``size`` x ``size`` image described by ``what`` is tiled by ``patch``."""
    if size % patch:
        raise ValueError(
            f"{what} = {size} is not divisible by model.{name} = {patch}: the patches must tile "
            "the image; pick a patch size that divides it"
        )


def _check_input(size: int, **tensors: torch.Tensor) -> None:
    """Raise unless every tensor is (..., size, size) (position embeddings fix the size)."""
    for what, tensor in tensors.items():
        height, width = tensor.shape[-2:]
        if (height, width) != (size, size):
            raise ValueError(
                f"model.input_size is {size} but the {what} is {height}x{width}; the learned "
                "position embeddings fix the image size, so build the model for this size"
            )


class MTransReconstruction(nn.Module):
    """Single-contrast (guided=False) or cross-attention multi-contrast (guided=True) rec.

    forward(image (B,1,H,W), aux (B,1,H,W)) -> (B,1,H,W); aux ignored when not guided.

    Single (authors' ``CMMT``): head -> patches at ``coarse_patch_size`` + position embedding ->
    :class:`Transformer` -> unpatch -> conv1x1 C -> 1.
    Guided (authors' ``CrossCMMT``, reconstruction): :class:`CrossBranches` with fusion (the
    guide head's features are added to the target's), target at ``fine_patch_size``, guide at
    ``coarse_patch_size``; each branch ends in its own conv1x1 C -> 1. The target branch is the
    output; :meth:`forward_with_guide` also returns the guide branch's (B, 1, H, W) output,
    which the authors train towards the guide input.

    Args:
        input_size: H = W of both inputs (the authors' INPUT_SIZE, 320); fixes the position
            embeddings, and must be divisible by the patch sizes in use.
        guided: build the cross-attention multi-contrast model (True) or the single one.
        head_channels: channels C of the convolutional heads (HEAD_HIDDEN_DIM, 16).
        fine_patch_size: the target branch's patch size in the guided model (P1, 8).
        coarse_patch_size: the guide branch's patch size (P2, 16), and the single model's only
            patch size (PATCH_SIZE, 16).
        depth: self-attention blocks (TRANSFORMER_DEPTH, 4) or cross rounds (CTDEPTH, 4).
        num_heads: attention heads (4); must divide the token widths C*P^2.
        mlp_ratio: transformer MLP hidden width / token width (3).
    """

    def __init__(
        self,
        input_size: int,
        guided: bool = True,
        head_channels: int = 16,
        fine_patch_size: int = 8,
        coarse_patch_size: int = 16,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 3.0,
    ) -> None:
        super().__init__()
        check_positive_int("input_size", input_size)
        patch_sizes = {"coarse_patch_size": coarse_patch_size}
        if guided:
            patch_sizes["fine_patch_size"] = fine_patch_size
        _check_architecture(
            head_channels,
            fine_patch_size,
            coarse_patch_size,
            depth,
            num_heads,
            mlp_ratio,
            patch_sizes,
        )
        for name, patch in patch_sizes.items():
            _check_tiling("model.input_size", input_size, name, patch)
        self.input_size = input_size
        self.guided = guided
        if guided:
            self.branches = CrossBranches(
                input_size,
                input_size,
                True,
                head_channels,
                fine_patch_size,
                coarse_patch_size,
                depth,
                num_heads,
                mlp_ratio,
            )
            self.guide_tail = nn.Conv2d(head_channels, 1, kernel_size=1)
        else:
            self.head = ConvHead(1, head_channels)
            self.embedding = PatchEmbedding(head_channels, coarse_patch_size, input_size)
            self.transformer = Transformer(
                head_channels * coarse_patch_size**2, depth, num_heads, mlp_ratio
            )
        self.tail = nn.Conv2d(head_channels, 1, kernel_size=1)

    def forward_with_guide(
        self, image: torch.Tensor, aux: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Guided model only: (B,1,H,W) x 2 -> (target output, guide output), both (B,1,H,W)."""
        if not self.guided:
            raise ValueError("model.guided is False: the single-contrast model has no guide output")
        _check_input(self.input_size, input=image, auxiliary_input=aux)
        target, guide = self.branches(image, aux)
        return self.tail(target), self.guide_tail(guide)

    def forward(self, image: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        if self.guided:
            return self.forward_with_guide(image, aux)[0]
        _check_input(self.input_size, input=image)
        tokens = self.transformer(self.embedding(self.head(image)))
        return self.tail(self.embedding.unembed(tokens))


class MTransSuperResolution(nn.Module):
    """Cross-attention multi-contrast SR.

    forward(image (B,1,h,w) LR target, aux (B,1,h,w) LR auxiliary) -> (B,1,scale*h,scale*w).

    The authors' ``CrossCMMT`` (SR): :class:`CrossBranches` without fusion, the LR target at
    ``fine_patch_size`` and the guide on the HR grid at ``coarse_patch_size``; the target
    branch ends in the EDSR upsampler (log2(scale) x [conv3x3 C -> 4C, PixelShuffle]) and a
    conv3x3 C -> 1, which is the output; the guide branch ends in a conv1x1 C -> 1 at HR
    (:meth:`forward_with_guide` returns it; the authors train it towards the guide input).

    Adaptation: the authors' guide is a fully sampled HR image (scale*h x scale*w); ours is an
    LR image of the target's size. We upsample it to the HR grid (bicubic, align_corners
    False) before the guide branch, so every layer, and the parameter count at the authors'
    settings, is unchanged.

    Args:
        input_size: h = w of the LR inputs. The authors' INPUT_SIZE (160, HR 320) is also the
            LR size, so it maps to input_size directly. Must be divisible by
            ``fine_patch_size``; ``scale * input_size`` by ``coarse_patch_size``.
        scale: SR factor, a power of two (SCALE, 2).
        head_channels, fine_patch_size, coarse_patch_size, depth, num_heads, mlp_ratio: as in
            :class:`MTransReconstruction` (16, 8, 16, 4 cross rounds, 4, 3).
    """

    def __init__(
        self,
        input_size: int,
        scale: int = 2,
        head_channels: int = 16,
        fine_patch_size: int = 8,
        coarse_patch_size: int = 16,
        depth: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 3.0,
    ) -> None:
        super().__init__()
        check_positive_int("input_size", input_size)
        self.scale = check_scale(scale)
        _check_architecture(
            head_channels,
            fine_patch_size,
            coarse_patch_size,
            depth,
            num_heads,
            mlp_ratio,
            {"fine_patch_size": fine_patch_size, "coarse_patch_size": coarse_patch_size},
        )
        _check_tiling("model.input_size", input_size, "fine_patch_size", fine_patch_size)
        _check_tiling(
            f"the guide's HR size model.input_size * model.scale = {input_size} * {scale}",
            scale * input_size,
            "coarse_patch_size",
            coarse_patch_size,
        )
        self.input_size = input_size
        self.branches = CrossBranches(
            input_size,
            scale * input_size,
            False,
            head_channels,
            fine_patch_size,
            coarse_patch_size,
            depth,
            num_heads,
            mlp_ratio,
        )
        self.up = UpsampleTail(head_channels, scale)
        self.guide_tail = nn.Conv2d(head_channels, 1, kernel_size=1)

    def forward_with_guide(
        self, image: torch.Tensor, aux: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,1,h,w) x 2 -> (SR output, guide output), both (B, 1, scale*h, scale*w)."""
        _check_input(self.input_size, input=image, auxiliary_input=aux)
        hr_size = self.scale * self.input_size
        guide = F.interpolate(aux, size=(hr_size, hr_size), mode="bicubic", align_corners=False)
        target, guide = self.branches(image, guide)
        return self.up(target), self.guide_tail(guide)

    def forward(self, image: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        return self.forward_with_guide(image, aux)[0]
