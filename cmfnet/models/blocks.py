"""Building blocks shared by CMF-Net and the baselines, plus the model contract.

Every model in :mod:`cmfnet.models` is a :class:`JointModel`: ``forward(target_input, aux_input)``
takes two (B, 1, H, W) normalised magnitude images and returns ``(rec, sr)`` with ``rec``
(B, 1, H, W) and ``sr`` (B, 1, scale*H, scale*W).

Constructor arguments are validated by the ``check_*`` helpers, whose messages name the
Hydra key (``model.<name>``) so a bad config fails with a one-line explanation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "JointModel",
    "check_scale",
    "check_positive_int",
    "check_positive_float",
    "conv",
    "ResBlock",
    "UNetConvBlock",
    "UNetUpBlock",
    "UNet",
    "Upsampler",
    "UpsampleTail",
]


def check_scale(scale: int) -> int:
    """Return ``scale`` if it is a power of two >= 2 (the pixel-shuffle upsampler's domain)."""
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2 or scale & (scale - 1):
        raise ValueError(f"model.scale must be a power of two (2 or 4 in the paper), got {scale!r}")
    return scale


def check_positive_int(name: str, value: int) -> int:
    """Return ``value`` if it is an int >= 1, else raise ``ValueError`` naming ``model.<name>``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
    return value


def check_positive_float(name: str, value: float) -> float:
    """Return ``value`` as a float if it is a number > 0, else raise ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"model.{name} must be a positive number, got {value!r}")
    return float(value)


class JointModel(nn.Module):
    """Base class of every model: stores the validated SR ``scale``.

    Subclasses implement ``forward(target_input, aux_input) -> (rec, sr)`` with
    target_input, aux_input: (B, 1, H, W); rec: (B, 1, H, W); sr: (B, 1, scale*H, scale*W).

    ``trainable`` tells the trainer whether the model has anything to optimise; a model
    without parameters (the zero-filled baseline) sets it to False and is only evaluated.
    ``input_size`` is set by a model built for one image size (an MTrans stage).
    """

    trainable: bool = True
    #: the one LR image side the model takes (None: any size)
    input_size: int | None = None

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = check_scale(scale)


def conv(in_channels: int, out_channels: int, kernel_size: int = 3, bias: bool = True) -> nn.Conv2d:
    """Odd-kernel convolution with 'same' zero padding: (B, in, H, W) -> (B, out, H, W)."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


class ResBlock(nn.Module):
    """EDSR residual block: ``x + res_scale * conv(relu(conv(x)))``, (B, C, H, W) -> same.

    Two 3x3 convolutions with bias, no normalisation: 2 * (9*C*C + C) parameters
    (73,856 at C = 64).
    """

    def __init__(self, width: int, res_scale: float = 0.1) -> None:
        super().__init__()
        self.body = nn.Sequential(conv(width, width), nn.ReLU(inplace=True), conv(width, width))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.body(x)


class UNetConvBlock(nn.Sequential):
    """fastMRI U-Net block: 2 x [conv3x3 (no bias) -> InstanceNorm2d -> LeakyReLU].

    (B, in, H, W) -> (B, out, H, W). InstanceNorm has no affine parameters, so the block has
    9*in*out + 9*out*out parameters.
    """

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float = 0.2) -> None:
        super().__init__(
            conv(in_channels, out_channels, bias=False),
            nn.InstanceNorm2d(out_channels),
            nn.LeakyReLU(negative_slope, inplace=True),
            conv(out_channels, out_channels, bias=False),
            nn.InstanceNorm2d(out_channels),
            nn.LeakyReLU(negative_slope, inplace=True),
        )


class UNetUpBlock(nn.Sequential):
    """Decoder upsampling: ConvTranspose 2x2 stride 2 (no bias) -> InstanceNorm2d -> LeakyReLU.

    (B, in, H, W) -> (B, out, 2H, 2W).
    """

    def __init__(self, in_channels: int, out_channels: int, negative_slope: float = 0.2) -> None:
        super().__init__(
            nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2, bias=False),
            nn.InstanceNorm2d(out_channels),
            nn.LeakyReLU(negative_slope, inplace=True),
        )


class UNet(nn.Module):
    """fastMRI-style U-Net: (B, in_channels, H, W) -> (B, out_channels, H, W).

    Encoder: ``pools`` UNetConvBlocks (in -> w, w -> 2w, ..., each followed by a 2x2 average
    pool), bottleneck block 2^(pools-1) w -> 2^pools w, decoder: ``pools`` stages of
    UNetUpBlock + skip concatenation + UNetConvBlock, then a 1x1 convolution (with bias) to
    ``out_channels``. With in = out = 64, width = 128, pools = 2 this is CMF-Net's RecBlock
    (7,520,320 parameters).

    Any H, W is accepted: the input is reflect-padded (split evenly between both sides) to a
    multiple of 2**pools and the output cropped back. Reflect padding needs the padding on
    each side to be smaller than the side itself, and InstanceNorm needs the bottleneck map
    (padded size / 2**pools) to have more than one pixel (a clear ValueError otherwise).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int,
        pools: int,
        negative_slope: float = 0.2,
    ) -> None:
        super().__init__()
        self.pools = pools
        encoder_widths = [width * 2**level for level in range(pools)]
        self.down_blocks = nn.ModuleList()
        channels = in_channels
        for level_width in encoder_widths:
            self.down_blocks.append(UNetConvBlock(channels, level_width, negative_slope))
            channels = level_width
        self.bottleneck = UNetConvBlock(channels, 2 * channels, negative_slope)
        channels *= 2
        self.up_samplers = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for level_width in reversed(encoder_widths):
            self.up_samplers.append(UNetUpBlock(channels, level_width, negative_slope))
            self.up_blocks.append(UNetConvBlock(2 * level_width, level_width, negative_slope))
            channels = level_width
        self.out_conv = nn.Conv2d(channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        multiple = 2**self.pools
        pad_h, pad_w = -height % multiple, -width % multiple
        top, left = pad_h // 2, pad_w // 2
        if pad_h - top >= height or pad_w - left >= width:
            raise ValueError(
                f"U-Net input {height}x{width} is too small to reflect-pad to a multiple of "
                f"{multiple} (2**pools); use larger images or fewer pools"
            )
        if ((height + pad_h) // multiple) * ((width + pad_w) // multiple) < 2:
            raise ValueError(
                f"U-Net input {height}x{width} with {self.pools} pools "
                "leaves a 1x1 bottleneck, which "
                "InstanceNorm cannot normalise; use fewer pools (model.unet_pools) or larger images"
            )
        if pad_h or pad_w:
            x = F.pad(x, (left, pad_w - left, top, pad_h - top), mode="reflect")
        skips = []
        for block in self.down_blocks:
            x = block(x)
            skips.append(x)
            x = F.avg_pool2d(x, kernel_size=2, stride=2)
        x = self.bottleneck(x)
        for up_sampler, block in zip(self.up_samplers, self.up_blocks):
            x = block(torch.cat([up_sampler(x), skips.pop()], dim=1))
        x = self.out_conv(x)
        return x[..., top : top + height, left : left + width]


class Upsampler(nn.Sequential):
    """EDSR sub-pixel upsampler: log2(scale) x [conv3x3 C -> 4C, PixelShuffle(2)], no activation.

    (B, C, H, W) -> (B, C, scale*H, scale*W); scale must be a power of two.
    """

    def __init__(self, width: int, scale: int) -> None:
        stages = []
        for _ in range(check_scale(scale).bit_length() - 1):
            stages += [conv(width, 4 * width), nn.PixelShuffle(2)]
        super().__init__(*stages)


class UpsampleTail(nn.Sequential):
    """SR tail: Upsampler then conv3x3 to ``out_channels``.

    (B, C, H, W) -> (B, out_channels, scale*H, scale*W); 296,001 parameters at C = 64, x4.
    """

    def __init__(self, width: int, scale: int, out_channels: int = 1) -> None:
        super().__init__(Upsampler(width, scale), conv(width, out_channels))
