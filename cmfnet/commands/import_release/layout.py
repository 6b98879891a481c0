"""The CMF-Net release's network as tensor names: its fixed architecture, the name of each of our
tensors in the release's state dict, and the release tensors we have no counterpart for.
"""

from __future__ import annotations

import re

#: the release's fixed architecture (``fastmri/models/network.py``, class ``net``)
RELEASE_FUSION_LEVELS = 3


RELEASE_BRANCH_STEPS = 6


RELEASE_UNET_POOLS = 2


RELEASE_MFA_KERNELS = (1, 3, 5)


RELEASE_RES_SCALE = 0.1


#: release tensors our network has no counterpart for, and why
UNUSED_REASONS = {
    "tail1": "the release's second SR tail, built but never called in its forward",
    "conv3": "an MMF conv the release builds but never calls in its forward",
}


class ReleaseImportError(ValueError):
    """A release checkpoint that cannot be imported; the message names the file and tensor."""


def _conv_block_index(index: str) -> str:
    """Our U-Net conv block's conv (0, 3) -> the release ConvBlock's (``layers.0``, ``layers.4``:
    its blocks also hold a Dropout2d after each LeakyReLU)."""
    return {"0": "layers.0", "3": "layers.4"}[index]


def release_name(ours: str, pools: int = RELEASE_UNET_POOLS) -> str:
    """The release's name of our CMFNet tensor ``ours`` (KeyError if it has none)."""
    rules = [
        (r"head_target\.(.+)", lambda m: f"head2.{m[1]}"),
        (r"head_aux\.(.+)", lambda m: f"head1.{m[1]}"),
        (r"target_blocks\.(\d+)\.(.+)", lambda m: f"ResBlock2{int(m[1]) + 1}.{m[2]}"),
        (r"aux_blocks\.(\d+)\.(.+)", lambda m: f"ResBlock1{int(m[1]) + 1}.{m[2]}"),
        (
            r"fusions\.(\d+)\.aux_convs\.(\d+)\.(.+)",
            lambda m: f"mf{int(m[1]) + 1}.conv{int(m[2]) + 1}.{m[3]}",
        ),
        (r"fusions\.(\d+)\.project\.(.+)", lambda m: f"mf{int(m[1]) + 1}.conv.{m[2]}"),
        (
            r"rec_blocks\.(\d+)\.down_blocks\.(\d+)\.([03])\.(.+)",
            lambda m: (
                f"unet{int(m[1]) + 1}.down_sample_layers.{m[2]}.{_conv_block_index(m[3])}.{m[4]}"
            ),
        ),
        (
            r"rec_blocks\.(\d+)\.bottleneck\.([03])\.(.+)",
            lambda m: f"unet{int(m[1]) + 1}.conv.{_conv_block_index(m[2])}.{m[3]}",
        ),
        (
            r"rec_blocks\.(\d+)\.up_samplers\.(\d+)\.0\.(.+)",
            lambda m: f"unet{int(m[1]) + 1}.up_transpose_conv.{m[2]}.layers.0.{m[3]}",
        ),
        # the release's last decoder stage is Sequential(ConvBlock, 1x1 conv): one level deeper
        (
            r"rec_blocks\.(\d+)\.up_blocks\.(\d+)\.([03])\.(.+)",
            lambda m: (
                f"unet{int(m[1]) + 1}.up_conv.{m[2]}."
                f"{'0.' if int(m[2]) == pools - 1 else ''}{_conv_block_index(m[3])}.{m[4]}"
            ),
        ),
        (
            r"rec_blocks\.(\d+)\.out_conv\.(.+)",
            lambda m: f"unet{int(m[1]) + 1}.up_conv.{pools - 1}.1.{m[2]}",
        ),
        (r"sr_blocks\.(\d+)\.(.+)", lambda m: f"ResBlock{int(m[1]) + 1}.{m[2]}"),
        # MMF: ours runs the global bottleneck on a pooled map; the release's Sequential starts
        # with its AdaptiveAvgPool2d, so its layer indices are one higher
        (
            r"mutual_fusions\.(\d+)\.(sr|rec)_local\.(\d+)\.(.+)",
            lambda m: f"bf{int(m[1]) + 1}.local_att{'' if m[2] == 'sr' else '2'}.{m[3]}.{m[4]}",
        ),
        (
            r"mutual_fusions\.(\d+)\.(sr|rec)_global\.(\d+)\.(.+)",
            lambda m: (
                f"bf{int(m[1]) + 1}.global_att{'' if m[2] == 'sr' else '2'}.{int(m[3]) + 1}.{m[4]}"
            ),
        ),
        (
            r"mutual_fusions\.(\d+)\.local_message\.(.+)",
            lambda m: f"bf{int(m[1]) + 1}.conv1.{m[2]}",
        ),
        (
            r"mutual_fusions\.(\d+)\.global_message\.(.+)",
            lambda m: f"bf{int(m[1]) + 1}.conv2.{m[2]}",
        ),
        (r"rec_tail\.(.+)", lambda m: f"tail3.{m[1]}"),
        (r"sr_tail\.(.+)", lambda m: f"tail2.{m[1]}"),
    ]
    for pattern, rename in rules:
        match = re.fullmatch(pattern, ours)
        if match:
            return rename(match)
    raise KeyError(f"{ours}: no release name for this tensor")


def unused_release_tensors(model) -> dict[str, tuple[tuple[int, ...], str]]:
    """The release's tensors that our ``model`` (a CMFNet) leaves out: name -> (shape, reason).
    ``tail1`` has the shapes of the SR tail; ``bf<i>.conv3`` those of the MMF's message conv."""
    state = model.state_dict()
    unused = {}
    for name, tensor in state.items():
        if name.startswith("sr_tail."):
            unused["tail1." + name[len("sr_tail.") :]] = (
                tuple(tensor.shape),
                UNUSED_REASONS["tail1"],
            )
        match = re.fullmatch(r"mutual_fusions\.(\d+)\.local_message\.(.+)", name)
        if match:
            unused[f"bf{int(match[1]) + 1}.conv3.{match[2]}"] = (
                tuple(tensor.shape),
                UNUSED_REASONS["conv3"],
            )
    return unused


def release_layout(model) -> tuple[dict[str, str], dict[str, tuple[tuple[int, ...], str]]]:
    """``(release name -> our name, unused release name -> (shape, reason))`` for ``model``."""
    mapping = {}
    for ours in model.state_dict():
        theirs = release_name(ours, model.rec_blocks[0].pools)
        if theirs in mapping:
            raise AssertionError(f"{theirs}: two of our tensors map to it")
        mapping[theirs] = ours
    return mapping, unused_release_tensors(model)
