"""The transformer blocks of MTrans (Feng et al.): the convolutional head, patch embedding, self-
attention and cross-attention layers, and the two branches that exchange information through
cross attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cmfnet.models.blocks import (
    conv,
)

#: std of the truncated-normal init of the single model's transformer Linear weights (authors')
TRANSFORMER_INIT_STD = 0.02


def _mlp(dim: int, mlp_ratio: float) -> nn.Sequential:
    """Linear dim -> int(dim * mlp_ratio), GELU, Linear back to dim: (..., dim) -> (..., dim)."""
    hidden = int(dim * mlp_ratio)
    return nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


def _multi_head_attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, num_heads: int
) -> torch.Tensor:
    """softmax(q k^T / sqrt(D / heads)) v per head: (B, N, D), (B, M, D), (B, M, D) -> (B, N, D).

    Each head takes a contiguous block of D / heads features.
    """
    batch, length, dim = query.shape

    def split(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(batch, x.shape[1], num_heads, dim // num_heads).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(query), split(key), split(value))
    return out.transpose(1, 2).reshape(batch, length, dim)


class ConvHead(nn.Sequential):
    """3 x [conv3x3 (bias), BatchNorm2d, ReLU]: (B, in, H, W) -> (B, C, H, W).

    9*in*C + 2*9*C*C + 9*C parameters (4,896 at in = 1, C = 16).
    """

    def __init__(self, in_channels: int, channels: int) -> None:
        layers: list[nn.Module] = []
        for first in (in_channels, channels, channels):
            layers += [conv(first, channels), nn.BatchNorm2d(channels), nn.ReLU(inplace=True)]
        super().__init__(*layers)


class PatchEmbedding(nn.Module):
    """Flatten P x P patches into tokens and add a learned position embedding.

    (B, C, S, S) -> (B, (S/P)^2, P*P*C), patches in row-major order, each flattened as
    (patch row, patch column, channel). No projection: the only parameters are the position
    embedding's S*S*C values, drawn from N(0, 1). :meth:`unembed` is the exact inverse of the
    patching, (B, (S/P)^2, P*P*C) -> (B, C, S, S).
    """

    def __init__(self, channels: int, patch_size: int, image_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.position = nn.Parameter(torch.randn(1, self.grid**2, patch_size**2 * channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels = x.shape[:2]
        grid, patch = self.grid, self.patch_size
        x = x.reshape(batch, channels, grid, patch, grid, patch).permute(0, 2, 4, 3, 5, 1)
        return x.reshape(batch, grid * grid, patch * patch * channels) + self.position

    def unembed(self, tokens: torch.Tensor) -> torch.Tensor:
        batch, _, dim = tokens.shape
        grid, patch = self.grid, self.patch_size
        channels = dim // (patch * patch)
        x = tokens.reshape(batch, grid, grid, patch, patch, channels).permute(0, 5, 1, 3, 2, 4)
        return x.reshape(batch, channels, grid * patch, grid * patch)


class SelfAttentionBlock(nn.Module):
    """Pre-norm ViT block: x + attn(LN(x)), then + MLP(LN(.)); (B, N, D) -> (B, N, D).

    qkv Linear without bias, output projection with bias; 4*D*D + D + 2*r*D*D + (r + 1)*D
    + 4*D parameters at MLP ratio r.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = _mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        query, key, value = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        x = x + self.proj(_multi_head_attention(query, key, value, self.num_heads))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    """The single model's encoder: ``depth`` SelfAttentionBlocks and a final LayerNorm.

    Linear weights start from a normal of std ``TRANSFORMER_INIT_STD`` truncated to +-2, biases
    at zero (the authors' init). Shapes: (B, N, D) -> (B, N, D).
    """

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *(SelfAttentionBlock(dim, num_heads, mlp_ratio) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(dim)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=TRANSFORMER_INIT_STD)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks(x))


class CrossAttention(nn.Module):
    """MTrans cross-attention: queries from x, keys and values from cat(x, context) (tokens).

    out = proj(attention + x): the query input is added back *before* the output projection.
    q and kv Linears have no bias, proj has: 4*D*D + D parameters.

    Shapes: x (B, N, D), context (B, M, D) -> (B, N, D).
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        key, value = self.to_kv(torch.cat([x, context], dim=1)).chunk(2, dim=-1)
        attended = _multi_head_attention(self.to_q(x), key, value, self.num_heads)
        return self.proj(attended + x)


class CrossAttentionLayer(nn.Module):
    """x, context -> y + MLP(LN(y)) with y = LN(x) + CrossAttention(LN(x), LN(context)).

    The residual starts from the *normalised* x (as in the authors' layer); separate LayerNorms
    for x and context. Shapes: x (B, N, D), context (B, M, D) -> (B, N, D).
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.norm_x = nn.LayerNorm(dim)
        self.norm_context = nn.LayerNorm(dim)
        self.attention = CrossAttention(dim, num_heads)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = _mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = self.norm_x(x)
        x = x + self.attention(x, self.norm_context(context))
        return x + self.mlp(self.norm_mlp(x))


class ProjectedCrossLayer(nn.Module):
    """Run a CrossAttentionLayer of the context's width on tokens of another width.

    x (B, N, D) -> Linear D -> E -> layer(., context (B, M, E)) -> Linear E -> D -> (B, N, D);
    both projections are identities when D == E.
    """

    def __init__(self, dim: int, context_dim: int, num_heads: int, mlp_ratio: float) -> None:
        super().__init__()
        project = dim != context_dim
        self.project_in = nn.Linear(dim, context_dim) if project else nn.Identity()
        self.layer = CrossAttentionLayer(context_dim, num_heads, mlp_ratio)
        self.project_out = nn.Linear(context_dim, dim) if project else nn.Identity()

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.project_out(self.layer(self.project_in(x), context))


class CrossTransformer(nn.Module):
    """``depth`` rounds of x += f(x, g) then g += h(g, x) with the updated x.

    f attends from the target tokens x (width Dx) to the guide tokens g (width Dg) at width Dg;
    h attends from g to x at width Dx (see :class:`ProjectedCrossLayer`).

    Shapes: x (B, N, Dx), g (B, M, Dg) -> same two shapes.
    """

    def __init__(
        self, target_dim: int, guide_dim: int, depth: int, num_heads: int, mlp_ratio: float
    ) -> None:
        super().__init__()
        self.to_guide = nn.ModuleList(
            ProjectedCrossLayer(target_dim, guide_dim, num_heads, mlp_ratio) for _ in range(depth)
        )
        self.to_target = nn.ModuleList(
            ProjectedCrossLayer(guide_dim, target_dim, num_heads, mlp_ratio) for _ in range(depth)
        )

    def forward(
        self, target: torch.Tensor, guide: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        for target_layer, guide_layer in zip(self.to_guide, self.to_target):
            target = target + target_layer(target, guide)
            guide = guide + guide_layer(guide, target)
        return target, guide


class CrossBranches(nn.Module):
    """Heads, patch embeddings and cross transformer shared by the two cross models.

    target (B, 1, S, S) and guide (B, 1, Sg, Sg) -> feature maps (B, C, S, S), (B, C, Sg, Sg).
    The target is patched at ``fine_patch_size``, the guide at ``coarse_patch_size``. With
    ``fuse`` (the reconstruction model, S == Sg) the guide head's features are added to the
    target head's before the target is patched; the guide branch gets its own unfused features.
    """

    def __init__(
        self,
        target_size: int,
        guide_size: int,
        fuse: bool,
        head_channels: int,
        fine_patch_size: int,
        coarse_patch_size: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
    ) -> None:
        super().__init__()
        self.fuse = fuse
        self.target_head = ConvHead(1, head_channels)
        self.guide_head = ConvHead(1, head_channels)
        self.target_embedding = PatchEmbedding(head_channels, fine_patch_size, target_size)
        self.guide_embedding = PatchEmbedding(head_channels, coarse_patch_size, guide_size)
        self.transformer = CrossTransformer(
            head_channels * fine_patch_size**2,
            head_channels * coarse_patch_size**2,
            depth,
            num_heads,
            mlp_ratio,
        )

    def forward(
        self, target: torch.Tensor, guide: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        target = self.target_head(target)
        guide = self.guide_head(guide)
        if self.fuse:
            target = target + guide
        target_tokens, guide_tokens = self.transformer(
            self.target_embedding(target), self.guide_embedding(guide)
        )
        return (
            self.target_embedding.unembed(target_tokens),
            self.guide_embedding.unembed(guide_tokens),
        )
