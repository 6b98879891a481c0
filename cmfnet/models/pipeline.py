"""Reconstruct, then super-resolve: the two-stage baselines of the paper's comparison.

One class, :class:`ReconstructThenSuperResolve`, composes a reconstruction stage and a
super-resolution stage that Hydra builds from their own configs (``conf/model/reconstruction/``,
``conf/model/super_resolution/``); the paper's pipelines (UNet-EDSR†, UNet-SwinIR, MTrans-EDSR,
MTrans-EDSR†, MTrans-SwinIR†) are presets in ``conf/model/``, not classes.

A stage is an ``nn.Module`` with one of two methods, and ``guided`` telling whether it reads the
auxiliary contrast (the paper's †):

- reconstruction: ``reconstruct(image, aux) -> rec``, (B, 1, H, W) each;
- super-resolution: ``super_resolve(image, aux) -> sr``, (B, 1, H, W) -> (B, 1, sH, sW), with
  ``scale`` = s.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from cmfnet.models.baselines import EDSR
from cmfnet.models.blocks import JointModel, UNet, check_positive_int
from cmfnet.models.mtrans import MTransReconstruction
from cmfnet.models.swinir import SwinIR

__all__ = [
    "TRAINING_MODES",
    "ReconstructThenSuperResolve",
    "ResidualUNet",
    "MTransReconstructor",
    "SwinIRSuperResolver",
    "UNetEDSR",
]

#: ``sequential``: each stage learns from its own loss only (the SR loss does not reach the
#: reconstruction stage), as two separately trained networks; ``joint``: end to end.
TRAINING_MODES = ("sequential", "joint")


def _with_aux(image: torch.Tensor, aux: torch.Tensor, guided: bool) -> torch.Tensor:
    """The stage's input: ``image`` (B, 1, H, W), or cat(image, aux) (B, 2, H, W) when guided."""
    return torch.cat([image, aux], dim=1) if guided else image


@contextmanager
def settings_of(stage: str) -> Iterator[None]:
    """A stage's own ``model.<setting>`` errors, renamed ``model.<stage>.<setting>`` (where the
    setting is in a pipeline's config)."""
    try:
        yield
    except ValueError as err:
        raise ValueError(str(err).replace("model.", f"model.{stage}.")) from None


class ResidualUNet(UNet):
    """Reconstruction stage: rec = image + U-Net(image [, aux]) (fastMRI's U-Net, residual).

    Guided (†), the auxiliary image is the U-Net's second input channel. The state-dict keys are
    the U-Net's own, so checkpoints of the earlier ``UNetEDSR`` load unchanged.

    Shapes: image, aux (B, 1, H, W) -> (B, 1, H, W).
    """

    def __init__(self, width: int = 32, pools: int = 4, guided: bool = False) -> None:
        check_positive_int("reconstruction.width", width)
        check_positive_int("reconstruction.pools", pools)
        super().__init__(2 if guided else 1, 1, width, pools)
        self.guided = guided

    def reconstruct(self, image: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        return image + self(_with_aux(image, aux, self.guided))


class MTransReconstructor(MTransReconstruction):
    """Reconstruction stage: MTrans, single-contrast or cross-attention guided (†).

    Guided and training, it also scores the guide branch's output against the guide input (L1
    times ``guide_loss_weight``, as the authors train it); :meth:`pop_auxiliary_loss` hands that
    term to the training loss.

    Shapes: image, aux (B, 1, H, W) -> (B, 1, H, W), H = W = ``input_size``.
    """

    def __init__(self, input_size: int, guide_loss_weight: float = 1.0, **mtrans: object) -> None:
        with settings_of("reconstruction"):
            super().__init__(input_size, **mtrans)
            if isinstance(guide_loss_weight, bool) or not guide_loss_weight >= 0:
                raise ValueError(f"model.guide_loss_weight must be >= 0, got {guide_loss_weight!r}")
        self.guide_loss_weight = float(guide_loss_weight)
        self._auxiliary_loss: torch.Tensor | None = None

    def reconstruct(self, image: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        with settings_of("reconstruction"):  # an image of another size than input_size
            if self.guided and self.guide_loss_weight > 0 and self.training:
                rec, guide = self.forward_with_guide(image, aux)
                self._auxiliary_loss = self.guide_loss_weight * F.l1_loss(guide, aux)
                return rec
            return self(image, aux)

    def pop_auxiliary_loss(self) -> torch.Tensor | None:
        """The guide term of the last training forward (once), or None."""
        loss, self._auxiliary_loss = self._auxiliary_loss, None
        return loss


class SwinIRSuperResolver(SwinIR):
    """Super-resolution stage: SwinIR on the reconstruction (guided: cat(rec, aux), 2 channels).

    Shapes: image, aux (B, 1, H, W) -> (B, 1, scale*H, scale*W).
    """

    def __init__(self, scale: int = 2, guided: bool = False, **swinir: object) -> None:
        with settings_of("super_resolution"):
            super().__init__(scale=scale, in_channels=2 if guided else 1, out_channels=1, **swinir)
        self.guided = guided

    def super_resolve(self, image: torch.Tensor, aux: torch.Tensor) -> torch.Tensor:
        with settings_of("super_resolution"):  # an image the window cannot take
            return self(_with_aux(image, aux, self.guided))


class ReconstructThenSuperResolve(JointModel):
    """rec = reconstruction stage(target, aux); sr = super-resolution stage(rec, aux).

    Both outputs are supervised (rec against the LR fully sampled target, sr against HR).

    Args:
        reconstruction: the reconstruction stage (``reconstruct(image, aux)``).
        super_resolution: the SR stage (``super_resolve(image, aux)``), of factor ``scale``.
        scale: SR factor.
        training: ``sequential`` (default) detaches rec before the SR stage, so each stage learns
            from its own loss only, as the paper's "sequential" methods train a reconstruction
            network and an SR network for their own tasks; ``joint`` trains end to end (the SR
            loss also reaches the reconstruction stage).

    Shapes: target_input, aux_input (B, 1, H, W) -> rec (B, 1, H, W), sr (B, 1, scale*H, scale*W).
    """

    def __init__(
        self,
        reconstruction: nn.Module | None = None,
        super_resolution: nn.Module | None = None,
        scale: int = 4,
        training: str = "sequential",
    ) -> None:
        super().__init__(scale)
        if not callable(getattr(reconstruction, "reconstruct", None)):
            raise ValueError(
                "model.reconstruction: a pipeline needs a reconstruction stage with a "
                f"reconstruct() method (model/reconstruction=unet|mtrans), got {reconstruction!r}"
            )
        if not callable(getattr(super_resolution, "super_resolve", None)):
            raise ValueError(
                "model.super_resolution: a pipeline needs a super-resolution stage with a "
                f"super_resolve() method (model/super_resolution=edsr|swinir), "
                f"got {super_resolution!r}"
            )
        if super_resolution.scale != self.scale:
            raise ValueError(
                f"model.super_resolution.scale is {super_resolution.scale} but model.scale is "
                f"{self.scale}"
            )
        if training not in TRAINING_MODES:
            raise ValueError(f"model.training must be one of {TRAINING_MODES}, got {training!r}")
        self.reconstructor = reconstruction
        self.super_resolver = super_resolution
        self.input_size = getattr(reconstruction, "input_size", None)
        self.training_mode = training

    def pop_auxiliary_loss(self) -> torch.Tensor | None:
        """A stage's own extra training term from the last forward (MTrans's guide loss), or
        None; the training step adds it to the loss."""
        pop = getattr(self.reconstructor, "pop_auxiliary_loss", None)
        return pop() if pop is not None else None

    def forward(
        self, target_input: torch.Tensor, aux_input: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rec = self.reconstructor.reconstruct(target_input, aux_input)
        sr_input = rec.detach() if self.training_mode == "sequential" else rec
        return rec, self.super_resolver.super_resolve(sr_input, aux_input)


class UNetEDSR(ReconstructThenSuperResolve):
    """The U-Net -> EDSR pipeline as configs saved before the pipelines were composed by Hydra
    describe it (``_target_: cmfnet.models.UNetEDSR`` with these arguments): trained end to end
    (``joint``), as those runs were. Their checkpoints load unchanged (same state-dict keys)."""

    def __init__(
        self,
        scale: int = 4,
        unet_width: int = 32,
        unet_pools: int = 4,
        width: int = 64,
        n_resblocks: int = 16,
        res_scale: float = 0.1,
        use_aux: bool = False,
    ) -> None:
        super().__init__(
            reconstruction=ResidualUNet(unet_width, unet_pools, guided=use_aux),
            super_resolution=EDSR(scale, width, n_resblocks, res_scale),
            scale=scale,
            training="joint",
        )
