"""Tests of the joint reconstruction + SR loss and its configs."""

from __future__ import annotations

from pathlib import Path

import hydra.utils
import pytest
import torch
from hydra import compose, initialize_config_dir

from cmfnet.mri.losses import JointL1Loss

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def outputs_and_targets():
    generator = torch.Generator().manual_seed(0)
    shapes = [(2, 1, 6, 6), (2, 1, 24, 24), (2, 1, 6, 6), (2, 1, 24, 24)]
    return [torch.randn(*shape, generator=generator) for shape in shapes]


def test_weighted_sum_of_l1_terms():
    rec, sr, rec_target, sr_target = outputs_and_targets()
    loss = JointL1Loss(w_rec=0.2, w_sr=0.8)(rec, sr, rec_target, sr_target)
    rec_l1 = (rec - rec_target).abs().mean()
    sr_l1 = (sr - sr_target).abs().mean()
    torch.testing.assert_close(loss.rec, rec_l1)
    torch.testing.assert_close(loss.sr, sr_l1)
    torch.testing.assert_close(loss.total, 0.2 * rec_l1 + 0.8 * sr_l1)
    total, rec_term, sr_term = loss
    assert total.ndim == rec_term.ndim == sr_term.ndim == 0


def test_total_backpropagates_to_both_outputs():
    rec, sr, rec_target, sr_target = outputs_and_targets()
    rec.requires_grad_(True)
    sr.requires_grad_(True)
    JointL1Loss(w_rec=1.0, w_sr=0.0)(rec, sr, rec_target, sr_target).total.backward()
    assert rec.grad.abs().sum() > 0 and sr.grad.abs().sum() == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"w_rec": -0.1}, "loss.w_rec"),
        ({"w_sr": -1.0}, "loss.w_sr"),
        ({"w_rec": 0.0, "w_sr": 0.0}, "both be zero"),
        ({"w_rec": float("nan")}, "loss.w_rec"),
    ],
)
def test_invalid_weights_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        JointL1Loss(**kwargs)


def test_shape_mismatch_raises():
    rec, sr, rec_target, sr_target = outputs_and_targets()
    with pytest.raises(ValueError, match="sr output shape"):
        JointL1Loss()(rec, sr[..., :12, :12], rec_target, sr_target)


def composed_loss(*overrides: str) -> JointL1Loss:
    """The loss that ``conf/train.yaml`` composes with ``overrides``."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    return hydra.utils.instantiate(cfg.loss)


@pytest.mark.parametrize(
    "overrides, weights",
    [
        (["loss=l1"], (1.0, 1.0)),
        (["loss=t2net"], (0.2, 0.8)),
        (["model=t2net", "loss=l1"], (1.0, 1.0)),
        (["model=edsr", "loss=t2net"], (0.2, 0.8)),
        (["model=t2net", "loss.w_rec=0.5"], (0.5, 0.8)),
        (["model=t2net", "experiment=smoke"], (0.2, 0.8)),
    ],
)
def test_loss_configs(overrides, weights):
    loss = composed_loss(*overrides)
    assert isinstance(loss, JointL1Loss)
    assert (loss.w_rec, loss.w_sr) == weights


@pytest.mark.parametrize("model", sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml")))
def test_the_default_recipe_weights_t2net_0_2_to_0_8_and_every_other_model_1_to_1(model):
    loss = composed_loss(f"model={model}")  # loss=recipe is the default
    assert (loss.w_rec, loss.w_sr) == ((0.2, 0.8) if model == "t2net" else (1.0, 1.0))
