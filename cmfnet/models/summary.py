"""Model summary: parameters per top-level block and MACs of one forward pass.

MACs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (convolutions, transposed
convolutions and matrix products; element-wise work is not counted) on a copy of the model
moved to the ``meta`` device, so nothing is computed and the model itself is untouched.
MACs = FLOPs / 2.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["BlockSummary", "ModelSummary", "model_summary", "format_summary"]

OTHER = "(other)"


@dataclass(frozen=True)
class BlockSummary:
    """One top-level child of the model (``OTHER``: work done outside any child)."""

    name: str
    type: str
    params: int
    macs: int


@dataclass(frozen=True)
class ModelSummary:
    """Per-block rows plus totals for one sample of size ``input_hw`` (LR) -> ``output_hw`` (SR)."""

    model: str
    blocks: tuple[BlockSummary, ...]
    total_params: int
    trainable_params: int
    macs: int
    input_hw: tuple[int, int]
    output_hw: tuple[int, int]


def _count_macs(
    model: nn.Module, input_hw: tuple[int, int]
) -> tuple[int, dict[str, int], tuple[int, int]]:
    """Total MACs, MACs per top-level child name, and SR output size of one meta forward."""
    meta_model = copy.deepcopy(model).to("meta").eval()
    counter = FlopCounterMode(display=False)
    block_flops: dict[str, int] = {}
    handles = []
    for name, child in meta_model.named_children():
        depth = [0]
        start = [0]

        def enter(module, args, depth=depth, start=start):
            if depth[0] == 0:
                start[0] = counter.get_total_flops()
            depth[0] += 1

        def leave(module, args, output, name=name, depth=depth, start=start):
            depth[0] -= 1
            if depth[0] == 0:
                block_flops[name] = block_flops.get(name, 0) + counter.get_total_flops() - start[0]

        for module in child.modules():
            handles.append(module.register_forward_pre_hook(enter))
            handles.append(module.register_forward_hook(leave))
    image = torch.zeros(1, 1, *input_hw, device="meta")
    try:
        with torch.no_grad(), counter:
            _, sr = meta_model(image, image)
    finally:
        for handle in handles:
            handle.remove()
    total = counter.get_total_flops()
    block_macs = {name: flops // 2 for name, flops in block_flops.items()}
    block_macs[OTHER] = (total - sum(block_flops.values())) // 2
    return total // 2, block_macs, (sr.shape[-2], sr.shape[-1])


def model_summary(
    model: nn.Module, input_hw: tuple[int, int] = (80, 80), scale: int | None = None
) -> ModelSummary:
    """Summarise ``model`` for one sample with LR input size ``input_hw``; a model built for one
    image size (its ``input_size``: MTrans's position embeddings) is summarised at that size.

    ``scale``, when given, is checked against the SR output size the forward produces
    (a ``ValueError`` on mismatch), so a summary cannot be reported for the wrong factor.
    """
    fixed = getattr(model, "input_size", None)
    input_hw = (fixed, fixed) if fixed else (int(input_hw[0]), int(input_hw[1]))
    macs, block_macs, output_hw = _count_macs(model, input_hw)
    if scale is not None and output_hw != (scale * input_hw[0], scale * input_hw[1]):
        raise ValueError(f"model produces {output_hw} from {input_hw}, not x{scale}")
    blocks = [
        BlockSummary(
            name,
            type(child).__name__,
            sum(p.numel() for p in child.parameters()),
            block_macs.get(name, 0),
        )
        for name, child in model.named_children()
    ]
    if block_macs[OTHER]:
        blocks.append(BlockSummary(OTHER, "-", 0, block_macs[OTHER]))
    return ModelSummary(
        model=type(model).__name__,
        blocks=tuple(blocks),
        total_params=sum(p.numel() for p in model.parameters()),
        trainable_params=sum(p.numel() for p in model.parameters() if p.requires_grad),
        macs=macs,
        input_hw=input_hw,
        output_hw=output_hw,
    )


def _table_rows(summary: ModelSummary) -> list[tuple[str, str, str, str]]:
    rows = [(b.name, b.type, f"{b.params:,}", f"{b.macs / 1e9:.3f}") for b in summary.blocks]
    rows.append(("total", "", f"{summary.total_params:,}", f"{summary.macs / 1e9:.3f}"))
    return rows


def format_summary(summary: ModelSummary) -> str:
    """Readable table of a :class:`ModelSummary` (rendered with ``rich`` when installed)."""
    title = (
        f"{summary.model}: {summary.trainable_params:,} trainable parameters, "
        f"{summary.macs / 1e9:.2f} GMACs per sample, "
        f"{summary.input_hw[0]}x{summary.input_hw[1]} -> "
        f"{summary.output_hw[0]}x{summary.output_hw[1]}"
    )
    header = ("block", "type", "params", "GMACs")
    rows = _table_rows(summary)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        lines = [title] + [
            "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths))
            )
            for row in [header, *rows]
        ]
        return "\n".join(lines)
    table = Table()
    for i, column in enumerate(header):
        table.add_column(column, justify="left" if i < 2 else "right")
    for row in rows:
        table.add_row(*row)
    buffer = io.StringIO()
    console = Console(file=buffer, width=max(100, len(title)), force_terminal=False)
    console.print(title)
    console.print(table)
    return buffer.getvalue()
