"""Tests of SwinIR: the authors' parameter counts, shifted-window attention against a naive
masked attention, the authors' padding of odd sizes, argument checks and gradients."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from cmfnet.models.swinir import SWINIR_PRESETS, DropPath, SwinIR, SwinLayer

TINY = {"embed_dim": 8, "depths": (2, 2), "num_heads": (2, 4), "window_size": 4, "num_feat": 8}


@pytest.mark.parametrize(
    ("preset", "scale", "expected"),
    [
        ("classical", 2, 11_748_093),
        ("classical", 4, 11_895_805),
        ("lightweight", 2, 904_744),
        ("lightweight", 4, 911_236),
    ],
)
def test_parameter_counts_match_the_authors(preset: str, scale: int, expected: int) -> None:
    """Counts of the authors' network_swinir.py built with in_chans=1 (one output channel)."""
    with torch.device("meta"):
        model = SwinIR(scale=scale, in_channels=1, out_channels=1, **SWINIR_PRESETS[preset])
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == expected


def naive_swin_layer(
    layer: SwinLayer, x: torch.Tensor, height: int, width: int, window: int, shift: int
) -> torch.Tensor:
    """The layer written as plain attention over all H*W tokens with an explicit mask.

    Token p may attend to token q iff both fall in the same window of the map rolled by
    (-shift, -shift) and their original displacement is smaller than the window on both axes
    (i.e. they are true neighbours, not brought together by the roll's wrap-around). The bias
    for query p and key q is table[(dy + w - 1) * (2w - 1) + (dx + w - 1)] with
    (dy, dx) = position(p) - position(q).
    """
    batch, tokens, dim = x.shape
    heads = layer.attn.num_heads
    head_dim = dim // heads
    rows = torch.arange(height).repeat_interleave(width)
    cols = torch.arange(width).repeat(height)
    window_row = ((rows - shift) % height) // window
    window_col = ((cols - shift) % width) // window
    dy = rows[:, None] - rows[None, :]
    dx = cols[:, None] - cols[None, :]
    allowed = (
        (window_row[:, None] == window_row[None, :])
        & (window_col[:, None] == window_col[None, :])
        & (dy.abs() < window)
        & (dx.abs() < window)
    )
    bias = torch.zeros(heads, tokens, tokens)
    table = layer.attn.relative_position_bias_table
    for p in range(tokens):
        for q in range(tokens):
            if allowed[p, q]:
                row = (dy[p, q] + window - 1) * (2 * window - 1) + (dx[p, q] + window - 1)
                bias[:, p, q] = table[row]

    normed = F.layer_norm(x, (dim,), layer.norm1.weight, layer.norm1.bias)
    q, k, v = F.linear(normed, layer.attn.qkv.weight, layer.attn.qkv.bias).chunk(3, dim=-1)
    q, k, v = (t.view(batch, tokens, heads, head_dim).transpose(1, 2) for t in (q, k, v))
    logits = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + bias
    logits = logits.masked_fill(~allowed, float("-inf"))
    attended = (logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, tokens, dim)
    x = x + F.linear(attended, layer.attn.proj.weight, layer.attn.proj.bias)
    fc1, fc2 = layer.mlp[0], layer.mlp[2]
    hidden = F.layer_norm(x, (dim,), layer.norm2.weight, layer.norm2.bias)
    hidden = F.gelu(F.linear(hidden, fc1.weight, fc1.bias))
    return x + F.linear(hidden, fc2.weight, fc2.bias)


@pytest.mark.parametrize("shift", [0, 2])
def test_swin_layer_equals_naive_masked_attention(shift: int) -> None:
    torch.manual_seed(0)
    height, width, window, dim = 8, 12, 4, 8
    layer = SwinLayer(dim, num_heads=2, window_size=window, shift=shift, mlp_ratio=2.0).eval()
    with torch.no_grad():
        for param in layer.parameters():
            param.normal_(0.0, 0.5)
    x = torch.randn(2, height * width, dim)
    with torch.no_grad():
        out = layer(x, (height, width))
        expected = naive_swin_layer(layer, x, height, width, window, shift)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def reflect_pad_bottom_right(x: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Mirror the last rows/columns without repeating the edge (F.pad 'reflect'), by indexing."""
    height, width = x.shape[-2:]
    rows = list(range(height)) + [height - 2 - i for i in range(pad_h)]
    cols = list(range(width)) + [width - 2 - i for i in range(pad_w)]
    return x[..., rows, :][..., cols]


@pytest.mark.parametrize(
    ("upsampler", "scale"), [("pixelshuffle", 2), ("pixelshuffle", 4), ("pixelshuffledirect", 2)]
)
def test_odd_size_is_reflect_padded_bottom_right_and_cropped(upsampler: str, scale: int) -> None:
    torch.manual_seed(0)
    model = SwinIR(scale=scale, upsampler=upsampler, **TINY).eval()
    x = torch.randn(2, 1, 13, 10)
    padded = reflect_pad_bottom_right(x, 3, 2)
    assert padded.shape[-2:] == (16, 12)
    with torch.no_grad():
        out = model(x)
        expected = model(padded)[..., : scale * 13, : scale * 10]
        zero_padded = model(F.pad(x, (0, 2, 0, 3)))[..., : scale * 13, : scale * 10]
    assert out.shape == (2, 1, scale * 13, scale * 10)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(out, zero_padded, atol=1e-4)


def test_drop_path_rates_rise_linearly_over_all_layers() -> None:
    model = SwinIR(scale=2, drop_path_rate=0.3, **TINY)
    rates = [layer.drop_path.p for rstb in model.layers for layer in rstb.layers]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])
    shifts = [layer.shift for rstb in model.layers for layer in rstb.layers]
    assert shifts == [0, 2, 0, 2]


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"embed_dim": 10, "num_heads": (2, 4)}, "model.embed_dim"),
        ({"upsampler": "nearest+conv"}, "model.upsampler"),
        ({"depths": (2, 2, 2)}, "model.depths"),
        ({"depths": ()}, "model.depths"),
        ({"depths": (2, 0)}, "model.depths[1]"),
        ({"window_size": 0}, "model.window_size"),
        ({"scale": 3}, "model.scale"),
        ({"mlp_ratio": 0.0}, "model.mlp_ratio"),
        ({"drop_path_rate": 1.0}, "model.drop_path_rate"),
    ],
)
def test_bad_settings_raise_naming_the_setting(overrides: dict, name: str) -> None:
    kwargs = {"scale": 2, **TINY, **overrides}
    with pytest.raises(ValueError, match=f"^{re.escape(name)} "):
        SwinIR(**kwargs)


def test_input_too_small_to_reflect_pad_raises() -> None:
    model = SwinIR(scale=2, **TINY)
    with pytest.raises(ValueError, match="model.window_size"):
        model(torch.zeros(1, 1, 2, 8))


@pytest.mark.parametrize("upsampler", ["pixelshuffle", "pixelshuffledirect"])
def test_gradients_reach_every_parameter(upsampler: str) -> None:
    torch.manual_seed(0)
    model = SwinIR(scale=2, upsampler=upsampler, drop_path_rate=0.0, **TINY).train()
    model(torch.randn(2, 1, 9, 11)).square().mean().backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, name
        assert torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_drop_path_drops_whole_samples_in_training_only() -> None:
    torch.manual_seed(0)
    drop = DropPath(0.5)
    x = torch.ones(64, 3, 5)
    out = drop.train()(x)
    per_sample = out.flatten(1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert (per_sample == per_sample[:, :1]).all()
    assert torch.equal(drop.eval()(x), x)
