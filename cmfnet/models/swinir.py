"""SwinIR: image super-resolution with residual Swin Transformer blocks (Liang et al., 2021).

Written from the description and the reference implementation of the paper (repository
JingyunLiang/SwinIR, ``models/network_swinir.py``). The network is

    conv3x3 (in -> C)                                   shallow features F0
    tokens = LayerNorm(flatten(F0))                     patch embedding, patch size 1
    K x RSTB: tokens + conv3x3(Swin layers(tokens))     residual Swin Transformer blocks
    F = conv3x3(unflatten(LayerNorm(tokens))) + F0      deep features, long skip
    upsampler(F) -> (out, scale*H, scale*W)

Swin layers alternate plain and shifted (by window_size // 2) w x w windows; attention inside
a window adds a learned relative position bias. Inputs are reflect-padded on the bottom and
right to a multiple of the window and the output is cropped back, as the authors do.

The authors normalise inputs as ``(x - mean) * img_range``, with a zero mean for inputs that
are not RGB and ``img_range = 1``: for our single-channel images this is the identity, so it
is left out. Absolute position embeddings (off in both published configs) are not supported:
they would tie the model to one input size.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cmfnet.models.blocks import (
    UpsampleTail,
    check_positive_float,
    check_positive_int,
    check_scale,
    conv,
)

__all__ = [
    "SWINIR_PRESETS",
    "UPSAMPLERS",
    "DropPath",
    "relative_position_index",
    "window_partition",
    "window_merge",
    "shifted_window_mask",
    "WindowAttention",
    "SwinLayer",
    "RSTB",
    "SwinIR",
]

UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect")

#: logit added to pairs of tokens from different regions of a shifted window (the authors' value)
MASKED_LOGIT = -100.0

#: the authors' two super-resolution configurations, as keyword arguments of :class:`SwinIR`
SWINIR_PRESETS: dict[str, dict] = {
    "classical": {
        "embed_dim": 180,
        "depths": (6,) * 6,
        "num_heads": (6,) * 6,
        "window_size": 8,
        "mlp_ratio": 2.0,
        "upsampler": "pixelshuffle",
    },
    "lightweight": {
        "embed_dim": 60,
        "depths": (6,) * 4,
        "num_heads": (6,) * 4,
        "window_size": 8,
        "mlp_ratio": 2.0,
        "upsampler": "pixelshuffledirect",
    },
}


def _linear(in_features: int, out_features: int) -> nn.Linear:
    """Linear layer initialised as in Swin: weights ~ N(0, 0.02^2) truncated to [-2, 2], bias 0."""
    layer = nn.Linear(in_features, out_features)
    nn.init.trunc_normal_(layer.weight, std=0.02)
    nn.init.zeros_(layer.bias)
    return layer


class DropPath(nn.Module):
    """Stochastic depth on a residual branch, (B, ...) -> (B, ...).

    In training, each sample's branch is zeroed with probability ``p`` and the kept ones are
    scaled by 1 / (1 - p); in evaluation it is the identity.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def relative_position_index(window_size: int) -> torch.Tensor:
    """(N, N) long, N = window_size**2: row of the bias table for query i and key j.

    With (dy, dx) = position(i) - position(j), each in [-(w-1), w-1], the row is
    (dy + w - 1) * (2w - 1) + (dx + w - 1), in [0, (2w - 1)**2).
    """
    axis = torch.arange(window_size)
    coords = torch.stack(torch.meshgrid(axis, axis, indexing="ij")).flatten(1)
    delta = coords[:, :, None] - coords[:, None, :] + (window_size - 1)
    return delta[0] * (2 * window_size - 1) + delta[1]


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, nW, w*w, C): the non-overlapping w x w windows in row-major order.

    H and W must be multiples of w; nW = (H / w) * (W / w).
    """
    batch, height, width, channels = x.shape
    rows, cols = height // window_size, width // window_size
    x = x.view(batch, rows, window_size, cols, window_size, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch, rows * cols, window_size**2, channels)


def window_merge(windows: torch.Tensor, window_size: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B, nW, w*w, C) -> (B, H, W, C)."""
    batch, channels = windows.shape[0], windows.shape[-1]
    rows, cols = height // window_size, width // window_size
    x = windows.view(batch, rows, cols, window_size, window_size, channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch, height, width, channels)


def shifted_window_mask(
    height: int, width: int, window_size: int, shift: int, device: torch.device | None = None
) -> torch.Tensor:
    """(nW, w*w, w*w) additive attention mask of the shifted windows of an H x W map.

    After the map is rolled by (-shift, -shift), the last row and column of windows hold
    tokens that were not neighbours before the roll. Each axis is cut into three regions,
    [0, L - w), [L - w, L - shift) and [L - shift, L); two tokens of a window may attend to each
    other (0) only if they lie in the same region on both axes, otherwise they get
    ``MASKED_LOGIT`` (-100). H and W must be multiples of w and 0 < shift < w.
    """

    def regions(length: int) -> torch.Tensor:
        index = torch.arange(length, device=device)
        return (index >= length - window_size).long() + (index >= length - shift).long()

    labels = regions(height)[:, None] * 3 + regions(width)[None, :]
    labels = window_partition(labels[None, :, :, None], window_size)[0, :, :, 0]
    different = labels[:, :, None] != labels[:, None, :]
    return torch.zeros(different.shape, device=device).masked_fill(different, MASKED_LOGIT)


class WindowAttention(nn.Module):
    """Multi-head self-attention within windows, with a learned relative position bias.

    softmax(q k^T / sqrt(d) + B + M) v per head, where B is looked up in a table of
    (2w - 1)**2 x num_heads learned values by :func:`relative_position_index` and M is the
    optional shifted-window mask. qkv projection with bias, output projection.

    Shapes: windows (B, nW, w*w, C), mask (nW, w*w, w*w) or None -> (B, nW, w*w, C).
    """

    def __init__(self, dim: int, window_size: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.relative_position_bias_table = nn.Parameter(
            torch.empty((2 * window_size - 1) ** 2, num_heads)
        )
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer(
            "relative_position_index", relative_position_index(window_size), persistent=False
        )
        self.qkv = _linear(dim, 3 * dim)
        self.proj = _linear(dim, dim)

    def forward(self, windows: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, num_windows, tokens, dim = windows.shape
        heads = self.num_heads
        qkv = self.qkv(windows).view(batch, num_windows, tokens, 3, heads, dim // heads)
        qkv = qkv.permute(3, 0, 1, 4, 2, 5).reshape(
            3, batch, num_windows * heads, tokens, dim // heads
        )
        bias = self.relative_position_bias_table[self.relative_position_index].permute(2, 0, 1)
        if mask is None:
            bias = bias.expand(num_windows, heads, tokens, tokens)
        else:
            bias = bias + mask[:, None]
        out = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], attn_mask=bias.reshape(-1, tokens, tokens).to(qkv.dtype)
        )
        out = out.view(batch, num_windows, heads, tokens, dim // heads).transpose(2, 3)
        return self.proj(out.reshape(batch, num_windows, tokens, dim))


class SwinLayer(nn.Module):
    """Swin Transformer layer: x + (shifted) window attention(LN(x)), then x + MLP(LN(x)).

    The MLP is Linear(C -> int(C * mlp_ratio)) -> GELU -> Linear(-> C); both residual branches
    go through stochastic depth with rate ``drop_path``. With ``shift`` > 0 the map is rolled
    by (-shift, -shift) before the window partition and rolled back after, and attention uses
    the mask of :func:`shifted_window_mask`.

    Shapes: tokens (B, H*W, C) of an H x W map, H and W multiples of ``window_size``;
    ``mask`` (nW, w*w, w*w) of this size and shift, ignored when shift = 0 and built when
    None (:class:`SwinIR` builds it once for all layers) -> (B, H*W, C).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift: int,
        mlp_ratio: float,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(_linear(dim, hidden), nn.GELU(), _linear(hidden, dim))
        self.drop_path = DropPath(drop_path)

    def forward(
        self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        height, width = size
        batch, _, dim = x.shape
        y = self.norm1(x).view(batch, height, width, dim)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
            if mask is None:
                mask = shifted_window_mask(height, width, self.window_size, self.shift, x.device)
        windows = self.attn(window_partition(y, self.window_size), mask if self.shift else None)
        y = window_merge(windows, self.window_size, height, width)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = x + self.drop_path(y.reshape(batch, height * width, dim))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def _to_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C), row-major tokens (patch size 1)."""
    return x.flatten(2).transpose(1, 2)


def _to_image(tokens: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, H*W, C) -> (B, C, H, W), the inverse of :func:`_to_tokens`."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *size)


class RSTB(nn.Module):
    """Residual Swin Transformer block: x + tokens(conv3x3(image(Swin layers(x)))).

    ``depth`` Swin layers, the odd ones (1, 3, ...) shifted by window_size // 2;
    ``drop_paths`` gives each layer's stochastic depth rate.

    Shapes: tokens (B, H*W, C), mask as for :class:`SwinLayer` -> (B, H*W, C).
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        drop_paths: Sequence[float],
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            SwinLayer(
                dim,
                num_heads,
                window_size,
                shift=window_size // 2 if index % 2 else 0,
                mlp_ratio=mlp_ratio,
                drop_path=drop_paths[index],
            )
            for index in range(depth)
        )
        self.conv = conv(dim, dim)

    def forward(
        self, x: torch.Tensor, size: tuple[int, int], mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        y = x
        for layer in self.layers:
            y = layer(y, size, mask)
        return x + _to_tokens(self.conv(_to_image(y, size)))


class SwinIR(nn.Module):
    """(B, in_channels, H, W) -> (B, out_channels, scale*H, scale*W).

    SwinIR super-resolution network. RSTB i has ``depths[i]`` Swin layers with
    ``num_heads[i]`` heads, all of width ``embed_dim``; stochastic depth rates rise linearly
    from 0 to ``drop_path_rate`` over all layers. Upsamplers:

    * ``"pixelshuffle"`` (classical SR): conv3x3 -> ``num_feat``, LeakyReLU(0.01), log2(scale)
      x [conv3x3 -> 4 num_feat, PixelShuffle(2)], conv3x3 -> ``out_channels``;
    * ``"pixelshuffledirect"`` (lightweight SR): conv3x3 -> out_channels * scale**2,
      PixelShuffle(scale).

    ``SWINIR_PRESETS`` holds the authors' classical and lightweight configurations: with one
    input and output channel they have 11,748,093 / 11,895,805 (x2 / x4) and
    904,744 / 911,236 parameters.

    H and W need not be multiples of ``window_size``: the input is reflect-padded on the bottom
    and right (each pad must be smaller than the side) and the output cropped back.
    """

    def __init__(
        self,
        scale: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        embed_dim: int = 180,
        depths: Sequence[int] = (6,) * 6,
        num_heads: Sequence[int] = (6,) * 6,
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        upsampler: str = "pixelshuffle",
        num_feat: int = 64,
        drop_path_rate: float = 0.1,
        patch_norm: bool = True,
    ) -> None:
        super().__init__()
        self.scale = check_scale(scale)
        check_positive_int("in_channels", in_channels)
        check_positive_int("out_channels", out_channels)
        check_positive_int("embed_dim", embed_dim)
        self.window_size = check_positive_int("window_size", window_size)
        mlp_ratio = check_positive_float("mlp_ratio", mlp_ratio)
        check_positive_int("num_feat", num_feat)
        depths, num_heads = tuple(depths), tuple(num_heads)
        if not depths or len(depths) != len(num_heads):
            raise ValueError(
                f"model.depths and model.num_heads must be non-empty and of equal length, "
                f"got {len(depths)} and {len(num_heads)} entries"
            )
        for index, (depth, heads) in enumerate(zip(depths, num_heads)):
            check_positive_int(f"depths[{index}]", depth)
            check_positive_int(f"num_heads[{index}]", heads)
            if embed_dim % heads:
                raise ValueError(
                    f"model.embed_dim ({embed_dim}) must be divisible by every "
                    f"model.num_heads entry, got {heads}"
                )
        if upsampler not in UPSAMPLERS:
            raise ValueError(f"model.upsampler must be one of {UPSAMPLERS}, got {upsampler!r}")
        if (
            isinstance(drop_path_rate, bool)
            or not isinstance(drop_path_rate, (int, float))
            or not 0.0 <= drop_path_rate < 1.0
        ):
            raise ValueError(f"model.drop_path_rate must be in [0, 1), got {drop_path_rate!r}")

        self.conv_first = conv(in_channels, embed_dim)
        self.patch_norm = nn.LayerNorm(embed_dim) if patch_norm else nn.Identity()
        rates = torch.linspace(0.0, float(drop_path_rate), sum(depths), device="cpu").tolist()
        starts = [sum(depths[:index]) for index in range(len(depths))]
        self.layers = nn.ModuleList(
            RSTB(embed_dim, depth, heads, window_size, mlp_ratio, rates[start : start + depth])
            for depth, heads, start in zip(depths, num_heads, starts)
        )
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = conv(embed_dim, embed_dim)
        if upsampler == "pixelshuffle":
            self.tail = nn.Sequential(
                conv(embed_dim, num_feat),
                nn.LeakyReLU(negative_slope=0.01, inplace=True),
                UpsampleTail(num_feat, scale, out_channels),
            )
        else:
            self.tail = nn.Sequential(
                conv(embed_dim, out_channels * scale**2), nn.PixelShuffle(scale)
            )

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        """Reflect-pad the bottom and right of (B, C, H, W) to multiples of the window."""
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.window_size, -width % self.window_size
        if pad_h >= height or pad_w >= width:
            raise ValueError(
                f"SwinIR input {height}x{width} is too small to reflect-pad to a multiple of "
                f"model.window_size={self.window_size}; use larger images or a smaller window"
            )
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Deep feature extraction without the long skip: (B, C, H, W) -> (B, C, H, W).

        H and W must be multiples of ``window_size``.
        """
        size = (x.shape[-2], x.shape[-1])
        shift = self.window_size // 2
        mask = shifted_window_mask(*size, self.window_size, shift, x.device) if shift else None
        tokens = self.patch_norm(_to_tokens(x))
        for layer in self.layers:
            tokens = layer(tokens, size, mask)
        return _to_image(self.norm(tokens), size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = self.conv_first(self._pad(x))
        x = x + self.conv_after_body(self.forward_features(x))
        return self.tail(x)[..., : self.scale * height, : self.scale * width]
