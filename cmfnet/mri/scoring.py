"""What is scored: which outputs, and what is done to a de-normalised output and its target first.

A :class:`Scoring` is built from the ``scoring`` config group (``conf/scoring/``) and applied by
the LightningModule to every validation and test batch before the per-volume metrics
(:mod:`cmfnet.mri.metrics`) see it:

- ``fastmri`` (default): both outputs as they are, against the untouched targets (fastMRI's
  convention, the one ``cmfnet evaluate`` uses on files).
- ``fastmri_nonneg``: outputs clamped at zero first.
- ``release``: what the CMF-Net authors' release reports (``module_CMFNet.validation_step``,
  ``mri_module.validation_epoch_end``): the SR output only, against a target that was clamped at
  +-6 in the release's normalised units before being de-normalised. The release normalises with
  the zero-filled LR input's mean and std, and its LR image is ``scale`` times brighter than
  ours (it does not divide by the scale), so its statistics are ``scale`` times ours and the
  target is clamped to ``scale * (mean +- 6 std)`` in our units (``stats_gain: ${scale}``). Its
  normalisation's eps (1e-11, added to the std) is left out. The release's data range is the
  clamped target volume's max, as fastMRI's ``evaluate`` takes it from the target it is given.
  The streaming metrics take PSNR's so; SSIM's must be known before the volume is scored, and
  is the unclamped target's max (the dataset's ``sr_max``): the two differ only where the clamp
  lowers a volume's max, which the run counts (``sr_max_mismatches``; a warning names them).
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from cmfnet.mri.metrics import OUTPUTS


class Scoring:
    """One scoring convention (a plain class, not a dataclass: Hydra would turn a dataclass
    instance inside a config dict such as ``module.also_score`` back into a config node).

    Args:
        name: its name, recorded in metrics.json, W&B tags and report tables.
        outputs: the outputs scored, a subset of :data:`cmfnet.mri.metrics.OUTPUTS`.
        output_floor: de-normalised outputs are clamped at this value first (None: as they are).
        target_clamp: targets are clamped to ``gain * (mean +- target_clamp * std)`` first, with
            the normalisation statistics of the sample (None: untouched).
        stats_gain: ``gain`` above: how much brighter than ours the input whose statistics set
            the clamp is (the release's LR input: ``scale``).
    """

    def __init__(
        self,
        name: str = "fastmri",
        outputs: Sequence[str] = OUTPUTS,
        output_floor: Optional[float] = None,
        target_clamp: Optional[float] = None,
        stats_gain: float = 1.0,
    ) -> None:
        outputs = tuple(outputs)
        if not outputs or any(out not in OUTPUTS for out in outputs):
            raise ValueError(
                f"scoring.outputs must be a non-empty subset of {list(OUTPUTS)}, "
                f"got {list(outputs)}"
            )
        if target_clamp is not None and not target_clamp > 0:
            raise ValueError(f"scoring.target_clamp must be > 0 or null, got {target_clamp}")
        if not stats_gain > 0:
            raise ValueError(f"scoring.stats_gain must be > 0, got {stats_gain}")
        self.name = name
        self.outputs = outputs
        self.output_floor = output_floor
        self.target_clamp = target_clamp
        self.stats_gain = float(stats_gain)

    def __repr__(self) -> str:
        return (
            f"Scoring(name={self.name!r}, outputs={self.outputs}, "
            f"output_floor={self.output_floor}, target_clamp={self.target_clamp}, "
            f"stats_gain={self.stats_gain})"
        )

    def output(self, pred: torch.Tensor) -> torch.Tensor:
        """A de-normalised output (B, 1, H, W) as it is scored (and shown in figures)."""
        return pred if self.output_floor is None else pred.clamp_min(self.output_floor)

    def target(self, target: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """A de-normalised target (B, 1, H, W) as it is scored; ``mean``, ``std`` (B, 1, 1, 1)
        are the sample's normalisation statistics."""
        if self.target_clamp is None:
            return target
        low = self.stats_gain * (mean - self.target_clamp * std)
        high = self.stats_gain * (mean + self.target_clamp * std)
        return torch.maximum(torch.minimum(target, high), low)
