"""One LightningModule for joint reconstruction + super-resolution."""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Mapping, NamedTuple, Optional

import lightning as L
import torch
from torch import nn
from torch.nn.utils import get_total_norm

from cmfnet.data.transforms import JointSample
from cmfnet.mri.metrics import METRICS, StreamingVolumeMetrics, score_key, std_key
from cmfnet.mri.scoring import Scoring

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """A training loss or gradient became NaN or inf."""


class _StepLoss(NamedTuple):
    """A training batch's losses, kept until the optimizer step checks them."""

    losses: Any
    batch_idx: int
    slices: list[tuple[str, int]]
    batch_size: int


class JointRecSRModule(L.LightningModule):
    """Trains ``model(target_input, aux_input) -> (rec, sr)`` with a joint loss.

    Validation and test de-normalise both outputs (``x * std + mean``) and score them per
    volume with fastMRI's metrics, as the :class:`~cmfnet.mri.scoring.Scoring` says (default: both
    outputs against the untouched targets); the SR scores are the headline. Each batch is
    scored on the module's device as it comes (:class:`~cmfnet.mri.metrics.StreamingVolumeMetrics`:
    no image is kept or sent between ranks), with the volumes' maxima that the samples carry
    (``sr_max``, ``rec_max``) as SSIM's data range. The first validation (and test) slices are
    kept in :attr:`example_images` for figures.

    Args:
        model: any network with the ``(target_input, aux_input) -> (rec, sr)`` contract.
        loss: callable ``(rec, sr, rec_target, sr_target) -> JointLoss(total, rec, sr)``.
        optimizer: factory ``params -> Optimizer`` (Hydra ``_partial_``).
        scheduler: factory ``optimizer -> LRScheduler`` or None.
        num_example_images: how many slices (the first of the validation or test set) to keep.
        skip_nonfinite: skip an optimizer step whose loss or gradients are NaN/inf (the weights
            stay as they are) instead of stopping the run.
        scoring: how outputs are scored (``conf/scoring/``; None: fastMRI's convention). Its
            output transform also applies to the kept example images.
        also_score: further scorings, by name, computed at test time beside ``scoring``
            (``results["test"]["scorings"][name]``), so that one run gives tables in several.
        run_config: the resolved, secret-free run config, stored in every checkpoint under
            ``"cmfnet_config"`` so that ``cmfnet predict`` can rebuild the model from it.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: Callable,
        optimizer: Optional[Callable] = None,
        scheduler: Optional[Callable] = None,
        num_example_images: int = 4,
        skip_nonfinite: bool = False,
        scoring: Optional[Scoring] = None,
        also_score: Optional[Mapping[str, Scoring]] = None,
        run_config: Optional[dict] = None,
    ):
        super().__init__()
        self.model = model
        self.loss = loss
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.num_example_images = num_example_images
        self.skip_nonfinite = skip_nonfinite
        self.scoring = scoring if scoring is not None else Scoring()
        self.also_score = dict(also_score or {})
        self.skipped_batches = 0
        self._unchecked: list[_StepLoss] = []
        self.last_train_loss: Optional[float] = None
        self._metrics: dict[tuple[str, str], StreamingVolumeMetrics] = {}
        self._scorings: dict[str, Scoring] = {}
        self.example_images: list[dict] = []
        self._example_keys: Optional[list[tuple[str, int]]] = None
        self.results: dict[str, dict] = {}
        #: stage -> {(scoring name, output): {volume: {metric: value}}}, every rank's slices
        self.volume_scores: dict[str, dict[tuple[str, str], dict]] = {}
        self.run_config = run_config

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.run_config is not None:
            checkpoint["cmfnet_config"] = self.run_config

    def forward(self, target_input: torch.Tensor, aux_input: torch.Tensor):
        return self.model(target_input, aux_input)

    def _losses(self, batch: JointSample):
        """Outputs and loss of one batch; a model's own extra training term (a pipeline's
        ``pop_auxiliary_loss``: MTrans's guide loss) is added to the total."""
        rec, sr = self.model(batch.target_input, batch.aux_input)
        losses = self.loss(rec, sr, batch.rec_target, batch.sr_target)
        pop = getattr(self.model, "pop_auxiliary_loss", None)
        extra = pop() if pop is not None else None
        if extra is not None:
            losses = losses._replace(total=losses.total + extra)
        return rec, sr, losses

    def training_step(self, batch: JointSample, batch_idx: int):
        """The joint loss of one batch. It is checked for NaN/inf, together with the gradients,
        in :meth:`on_before_optimizer_step`: reading it here would stall a GPU between the
        forward and the backward pass."""
        _, _, losses = self._losses(batch)
        self._unchecked.append(
            _StepLoss(
                losses,
                batch_idx,
                list(zip(batch.fname, batch.slice_idx)),
                batch.target_input.shape[0],
            )
        )
        return losses.total

    def on_train_epoch_start(self) -> None:
        self._unchecked.clear()

    def on_before_optimizer_step(self, optimizer) -> None:
        """Stop (or skip the step) on a NaN/inf loss or gradient, then log the losses.

        The check of every batch since the last optimizer step and of all gradients costs one
        device-to-host read per step: each loss and the largest |gradient| (NaN if any is NaN).
        The last loss read is kept in :attr:`last_train_loss` for the progress bar
        (:class:`~cmfnet.lit.progress.CheckedLossProgressBar`), which would otherwise read the
        logged loss again after the optimizer step. Only a failing step looks for the batch or
        the parameter to name. Under DDP the gradients are averaged over ranks, so every rank
        sees a bad batch and skips together.
        """
        unchecked, self._unchecked = self._unchecked, []
        values = [step.losses.total.detach().float() for step in unchecked]
        grads = [param.grad for param in self.model.parameters() if param.grad is not None]
        if grads:
            values.append(get_total_norm(grads, norm_type=float("inf")).float())
        read = torch.stack(values).tolist() if values else []
        if all(math.isfinite(value) for value in read):
            for step in unchecked:  # the logger reads these every log_every_n_steps, not every step
                self.log("train/loss", step.losses.total, batch_size=step.batch_size)
                self.log("train/loss_rec", step.losses.rec, batch_size=step.batch_size)
                self.log("train/loss_sr", step.losses.sr, batch_size=step.batch_size)
            if unchecked:
                self.last_train_loss = read[len(unchecked) - 1]
            return
        bad = next((step for step, value in zip(unchecked, read) if not math.isfinite(value)), None)
        if bad is not None:
            where = ", ".join(f"{fname} slice {index}" for fname, index in bad.slices)
            message = (
                f"non-finite training loss at step {self.global_step} "
                f"(batch {bad.batch_idx}: {where})"
            )
            unit, units = "batch", "batches"
        else:
            name = next(
                name
                for name, param in self.model.named_parameters()
                if param.grad is not None and not torch.isfinite(param.grad).all()
            )
            message = f"non-finite gradient in {name} at step {self.global_step}"
            unit, units = "step", "steps"
        if not self.skip_nonfinite:
            raise NonFiniteLossError(
                f"{message}; set module.skip_nonfinite=true to skip such {units}"
            )
        optimizer.zero_grad(set_to_none=True)  # the optimizer then leaves every weight as it is
        self.skipped_batches += max(len(unchecked), 1)
        log.warning("skipping %s: %s", unit, message)

    def _start_eval(self, stage: str) -> None:
        """One collector per (scoring name, output) this stage scores: the run's scoring, and at
        test time every one of :attr:`also_score`."""
        scorings = {self.scoring.name: self.scoring}
        if stage == "test":
            scorings.update(self.also_score)
        self._scorings = scorings
        self._metrics = {
            (name, out): StreamingVolumeMetrics(self.device)
            for name, scoring in scorings.items()
            for out in scoring.outputs
        }

    def _eval_step(self, batch: JointSample, stage: str) -> None:
        rec, sr, losses = self._losses(batch)
        self.log(
            f"{stage}/loss", losses.total, batch_size=batch.target_input.shape[0], sync_dist=True
        )
        mean = batch.mean.view(-1, 1, 1, 1)
        std = batch.std.view(-1, 1, 1, 1)
        denorm = {
            "sr": (sr * std + mean, batch.sr_target * std + mean),
            "rec": (rec * std + mean, batch.rec_target * std + mean),
        }
        data_range = {"sr": batch.sr_max, "rec": batch.rec_max}  # of the unclamped target
        for (name, out), collected in self._metrics.items():
            scoring = self._scorings[name]
            pred, target = denorm[out]
            collected.update(
                batch.fname,
                batch.slice_idx,
                scoring.target(target, mean, std).squeeze(1),
                scoring.output(pred).squeeze(1),
                data_range[out],
            )
        self._keep_examples(
            batch,
            {out: (self.scoring.output(pred), target) for out, (pred, target) in denorm.items()},
        )

    def _choose_examples(self, dataloaders) -> None:
        """Pick the example slices of this evaluation: spread across volumes and anatomy when the
        dataset can say which (:meth:`~cmfnet.data.paired.PairedSliceDataset.spread_slices`),
        else the first ones met."""
        self.example_images = []
        dataset = getattr(dataloaders, "dataset", None)
        spread = getattr(dataset, "spread_slices", None)
        self._example_keys = spread(self.num_example_images) if spread is not None else None

    def _keep_examples(self, batch: JointSample, denorm: dict) -> None:
        for i in range(batch.target_input.shape[0]):
            if len(self.example_images) >= self.num_example_images:
                return
            if (
                self._example_keys is not None
                and (batch.fname[i], int(batch.slice_idx[i])) not in self._example_keys
            ):
                continue
            self.example_images.append(
                {
                    "fname": batch.fname[i],
                    "slice_idx": batch.slice_idx[i],
                    "input": batch.target_input[i, 0].float().cpu(),
                    "aux": batch.aux_input[i, 0].float().cpu(),
                    "sr": denorm["sr"][0][i, 0].float().cpu(),
                    "sr_target": denorm["sr"][1][i, 0].float().cpu(),
                    "rec": denorm["rec"][0][i, 0].float().cpu(),
                    "rec_target": denorm["rec"][1][i, 0].float().cpu(),
                }
            )

    def _finish_eval(self, stage: str) -> None:
        """Score every volume, all ranks' slices summed; :attr:`results` ``[stage]`` holds the
        run's scoring's means and stds and, under ``"scorings"``, those of each further scoring
        by name, and :attr:`volume_scores` ``[stage]`` every volume's scores.
        ``<out>_max_mismatches`` counts the volumes whose scored target's maximum is
        not the data range given in advance (:meth:`~cmfnet.mri.metrics.VolumeSums.max_mismatches`:
        none unless a scoring clamps the target); each such count is also logged as a warning.
        """
        by_scoring: dict[str, dict] = {name: {} for name in self._scorings}
        self.volume_scores[stage] = {}
        for (name, out), collected in self._metrics.items():
            merged = collected.reduce()  # every rank, in the same order
            if not len(merged):
                continue
            scores = merged.compute()
            self.volume_scores[stage][(name, out)] = scores["per_volume"]
            summary = by_scoring[name]
            for metric in METRICS:
                summary[score_key(out, metric)] = scores[metric]["mean"]
                summary[std_key(score_key(out, metric))] = scores[metric]["std"]
            summary[f"{out}_num_volumes"] = len(scores["per_volume"])
            mismatched = merged.max_mismatches()
            summary[f"{out}_max_mismatches"] = len(mismatched)
            if mismatched:
                log.warning(
                    "%s, scoring %s, %s: %d volume(s) scored against a target whose maximum is "
                    "not the volume's maximum known in advance (SSIM used the latter, PSNR the "
                    "former), e.g. %s",
                    stage,
                    name,
                    out,
                    len(mismatched),
                    ", ".join(mismatched[:3]),
                )
        summary = by_scoring.pop(self.scoring.name)
        logged = {f"{stage}/{k}": v for k, v in summary.items()}
        for name, extra in by_scoring.items():
            logged.update({f"{stage}/{name}/{k}": v for k, v in extra.items()})
        self.results[stage] = {**summary, "scorings": by_scoring} if by_scoring else summary
        self.log_dict(
            {k: float(v) for k, v in logged.items() if not k.endswith("num_volumes")},
            sync_dist=False,
            rank_zero_only=True,
        )

    def on_validation_epoch_start(self) -> None:
        self._start_eval("val")
        self._choose_examples(self.trainer.val_dataloaders)

    def validation_step(self, batch: JointSample, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._finish_eval("val")

    def on_test_epoch_start(self) -> None:
        self._start_eval("test")
        self._choose_examples(self.trainer.test_dataloaders)

    def test_step(self, batch: JointSample, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._finish_eval("test")

    def configure_optimizers(self):
        if self.optimizer_factory is None:
            raise ValueError("optimizer: no optimizer configured for a trainable model")
        optimizer = self.optimizer_factory(self.model.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"},
        }
