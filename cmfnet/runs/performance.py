"""Speed switches applied to a built model: channels_last, torch.compile, activation checkpointing.

Each switch keeps the parameter names (checkpoints stay interchangeable): the model's own
``forward`` is wrapped on the instance, and compilation uses ``nn.Module.compile`` in place.
bf16 autocast (``trainer.precision=bf16-mixed``), cuDNN autotuning (``trainer.benchmark``),
workers and pinned memory (``data.num_workers``, ``data.pin_memory``) are Lightning/DataLoader
settings and live in their own config groups.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


def _channels_last_forward(forward, *inputs: torch.Tensor):
    return forward(*(x.contiguous(memory_format=torch.channels_last) for x in inputs))


def _checkpointed_forward(module: nn.Module, forward, *inputs: torch.Tensor):
    if module.training and torch.is_grad_enabled():
        return checkpoint(forward, *inputs, use_reentrant=False)
    return forward(*inputs)


def enable_activation_checkpointing(model: nn.Module, module_types: Sequence[str]) -> int:
    """Recompute the activations of every submodule whose class name is in ``module_types``
    during backward instead of storing them; returns how many submodules were wrapped."""
    wrapped = 0
    for module in model.modules():
        if type(module).__name__ in module_types:
            module.forward = functools.partial(_checkpointed_forward, module, module.forward)
            wrapped += 1
    if not wrapped:
        raise ValueError(
            f"performance.checkpoint_modules: no submodule of type {list(module_types)} "
            f"in {type(model).__name__}"
        )
    return wrapped


def apply_performance(
    model: nn.Module,
    channels_last: bool = False,
    compile: bool = False,
    compile_mode: str = "default",
    activation_checkpointing: bool = False,
    checkpoint_modules: Sequence[str] = ("UNet",),
) -> nn.Module:
    """Apply the selected switches to ``model`` in place and return it.

    Args:
        channels_last: NHWC memory layout for weights and inputs (faster convolutions on GPUs).
        compile: ``torch.compile`` the model (``compile_mode``: default, reduce-overhead,
            max-autotune).
        activation_checkpointing: recompute activations of ``checkpoint_modules`` (class names;
            CMF-Net's RecBlocks are ``UNet``) in backward: less memory, about one extra forward.
    """
    if activation_checkpointing:
        enable_activation_checkpointing(model, checkpoint_modules)
    if channels_last:
        model.to(memory_format=torch.channels_last)
        model.forward = functools.partial(_channels_last_forward, model.forward)
    if compile:
        model.compile(mode=compile_mode)
    return model
