"""Reconstruct-then-super-resolve pipelines: the paper's presets composed by Hydra, the training
mode, the earlier UNetEDSR configs and checkpoints, and one-line errors for bad stages."""

from __future__ import annotations

import pytest
import torch
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from cmfnet.models import (
    EDSR,
    MTransReconstructor,
    ReconstructThenSuperResolve,
    ResidualUNet,
    SwinIRSuperResolver,
    UNetEDSR,
    build_model,
)
from cmfnet.models.blocks import UNet
from cmfnet.models.mtrans import MTRANS_PRESETS, MTransReconstruction
from cmfnet.models.swinir import SWINIR_PRESETS, SwinIR

#: preset -> (reconstruction stage, SR stage, reconstruction guided, SR guided)
PIPELINES = {
    "unet_edsr": ("ResidualUNet", "EDSR", False, False),
    "unet_edsr_mc": ("ResidualUNet", "EDSR", True, False),
    "unet_swinir": ("ResidualUNet", "SwinIRSuperResolver", False, False),
    "mtrans_edsr": ("MTransReconstructor", "EDSR", False, False),
    "mtrans_edsr_mc": ("MTransReconstructor", "EDSR", True, False),
    "mtrans_swinir_mc": ("MTransReconstructor", "SwinIRSuperResolver", True, False),
}


#: a tiny MTrans (patches 2 and 4 tile 8 and 12)
TINY_MTRANS = dict(head_channels=2, fine_patch_size=2, coarse_patch_size=4, depth=1, num_heads=2)


def compose_cfg(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra)


def images(batch: int, side: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, 1, side, side, generator=generator) for _ in range(2))


@pytest.mark.parametrize("name", sorted(PIPELINES))
def test_each_paper_pipeline_is_a_preset_of_one_class(name):
    rec_stage, sr_stage, rec_guided, sr_guided = PIPELINES[name]
    for size in ("tiny", "full"):
        cfg = compose_cfg(f"model={name}", f"size={size}", "scale=2")
        assert cfg.model._target_ == "cmfnet.models.ReconstructThenSuperResolve"
        assert cfg.model.training == "sequential"
        with torch.device("meta") if size == "full" else torch.device("cpu"):
            model = build_model(cfg.model)
        assert type(model.reconstructor).__name__ == rec_stage
        assert type(model.super_resolver).__name__ == sr_stage
        assert (model.reconstructor.guided, model.super_resolver.guided) == (rec_guided, sr_guided)
        assert model.scale == model.super_resolver.scale == 2


def test_stages_are_chosen_on_the_command_line():
    cfg = compose_cfg(
        "model=pipeline",
        "model/reconstruction=mtrans",
        "model/super_resolution=swinir_light",
        "size=tiny",
        "model.super_resolution.guided=true",
        "model.training=joint",
    )
    model = build_model(cfg.model)
    assert isinstance(model.reconstructor, MTransReconstruction)
    assert isinstance(model.super_resolver, SwinIR) and model.super_resolver.guided
    shuffle = model.super_resolver.tail[-1]  # pixelshuffledirect: one shuffle by the scale
    assert isinstance(shuffle, torch.nn.PixelShuffle) and shuffle.upscale_factor == 4
    assert model.training_mode == "joint"


def test_full_size_counts_are_the_sum_of_the_stages():
    unet = sum(p.numel() for p in UNet(1, 1, 32, 4).parameters())
    cfg = compose_cfg("model=unet_swinir", "scale=4")
    with torch.device("meta"):
        model = build_model(cfg.model)
    # SwinIR's classical x4 count for one channel, from the authors' code
    assert sum(p.numel() for p in model.super_resolver.parameters()) == 11_895_805
    assert sum(p.numel() for p in model.parameters()) == unet + 11_895_805
    cfg = compose_cfg("model=unet_edsr", "scale=4")
    with torch.device("meta"):
        assert sum(p.numel() for p in build_model(cfg.model).parameters()) == 9_271_362


@pytest.mark.parametrize("training, reaches", [("sequential", False), ("joint", True)])
def test_the_sr_loss_reaches_the_reconstruction_stage_only_when_joint(training, reaches):
    torch.manual_seed(0)
    model = ReconstructThenSuperResolve(
        ResidualUNet(width=4, pools=2, guided=True), EDSR(2, 8, 1), scale=2, training=training
    )
    rec, sr = model(*images(2, 8))
    sr.abs().mean().backward()
    unet_grads = [p.grad for p in model.reconstructor.parameters()]
    assert all(p.grad is not None for p in model.super_resolver.parameters())
    assert any(g is not None and g.abs().sum() > 0 for g in unet_grads) == reaches
    model.zero_grad(set_to_none=True)
    rec, _ = model(*images(2, 8))
    rec.abs().mean().backward()
    assert all(p.grad is None for p in model.super_resolver.parameters())
    assert any(p.grad is not None for p in model.reconstructor.parameters())


def test_an_earlier_unet_edsr_checkpoint_loads_into_the_preset_and_gives_the_same_outputs():
    earlier = {
        "_target_": "cmfnet.models.UNetEDSR",
        "scale": 2,
        "unet_width": 4,
        "unet_pools": 2,
        "width": 8,
        "n_resblocks": 2,
        "res_scale": 0.1,
        "use_aux": True,
    }
    torch.manual_seed(0)
    old = build_model(earlier)
    assert old.training_mode == "joint"  # as those runs were trained
    cfg = compose_cfg("model=unet_edsr_mc", "size=tiny", "scale=2")
    new = build_model(cfg.model)
    new.load_state_dict(old.state_dict(), strict=True)
    inputs = images(2, 8)
    with torch.no_grad():
        for a, b in zip(old.eval()(*inputs), new.eval()(*inputs)):
            assert torch.equal(a, b)
    assert isinstance(UNetEDSR(use_aux=False).reconstructor, ResidualUNet)


def test_a_guided_sr_stage_reads_the_auxiliary_image():
    torch.manual_seed(0)
    stage = SwinIRSuperResolver(
        scale=2, guided=True, embed_dim=8, depths=[1], num_heads=[2], window_size=4, num_feat=8
    ).eval()
    image, aux = images(1, 8)
    with torch.no_grad():
        assert not torch.equal(stage.super_resolve(image, aux), stage.super_resolve(image, -aux))
    assert stage.conv_first.in_channels == 2


@pytest.mark.parametrize(
    "stages, message",
    [
        (dict(reconstruction=None), "model.reconstruction: a pipeline needs a reconstruction"),
        (dict(super_resolution=None), "model.super_resolution: a pipeline needs a super-res"),
        (dict(reconstruction=EDSR(2, 8, 1)), "model.reconstruction: a pipeline needs"),
        (dict(super_resolution=EDSR(4, 8, 1)), "model.super_resolution.scale is 4 but model.scale"),
        (dict(training="alternating"), "model.training must be one of"),
    ],
)
def test_bad_stages_are_named(stages, message):
    arguments = dict(
        reconstruction=ResidualUNet(4, 2), super_resolution=EDSR(2, 8, 1), scale=2, **{}
    )
    arguments.update(stages)
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        ReconstructThenSuperResolve(**arguments)


def test_a_bad_stage_setting_is_named_by_its_place_in_the_pipeline():
    with pytest.raises(ValueError, match=r"^model\.super_resolution\.embed_dim \(10\) must be"):
        SwinIRSuperResolver(scale=2, embed_dim=10, depths=[1], num_heads=[4])
    with pytest.raises(ValueError, match=r"^model\.reconstruction\.pools must be"):
        ResidualUNet(width=4, pools=0)
    stage = MTransReconstructor(12, guided=True, **TINY_MTRANS)
    with pytest.raises(ValueError, match=r"^model\.reconstruction\.input_size is 12 but the input"):
        stage.reconstruct(*images(1, 8))
    stage = SwinIRSuperResolver(scale=2, embed_dim=8, depths=[1], num_heads=[2], window_size=16)
    with pytest.raises(ValueError, match=r"model\.super_resolution\.window_size=16"):
        stage.super_resolve(*images(1, 8))  # too small to reflect-pad to the window


def test_a_missing_stage_in_the_config_is_named():
    cfg = compose_cfg("model=pipeline", "~model/reconstruction")
    assert "reconstruction" not in cfg.model
    with pytest.raises(Exception) as info:
        build_model(cfg.model)
    from cmfnet.runs.errors import one_line

    assert one_line(info.value).startswith("model.reconstruction: a pipeline needs")


def test_swinir_widths_scale_to_a_multiple_of_the_heads():
    cfg = compose_cfg("model=unet_swinir", "experiment=hr160")
    assert cfg.model.super_resolution.embed_dim == 48  # 180 x 0.25 = 45 -> 48, 6 heads
    assert OmegaConf.select(cfg, "model.super_resolution.num_heads") == [6] * 6
    assert SWINIR_PRESETS["classical"]["embed_dim"] == 180
    assert set(MTRANS_PRESETS) >= {"reconstruction_single", "reconstruction_multi_cross"}


@pytest.mark.slow
def test_a_patch_grid_the_image_cannot_take_stops_the_run_with_one_line(tmp_path):
    from helpers.run import run_py

    proc = run_py(
        tmp_path,
        "experiment=smoke",
        "model=mtrans_edsr",
        "model.reconstruction.coarse_patch_size=5",
        "logger=none",
        "hydra.run.dir=run",
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: model.reconstruction.input_size = 16 is not divisible by "
        "model.reconstruction.coarse_patch_size = 5: the patches must tile the image; pick a "
        "patch size that divides it"
    )
    assert not (tmp_path / "run" / "checkpoints").exists()  # only the failure's record


@pytest.mark.parametrize("sweep", ["paper", "hr160"])
def test_the_named_comparisons_cover_the_papers_seven_methods_and_the_ablations(sweep):
    from cmfnet.commands.report.records import METHOD_ORDER, PAPER_NAMES

    models = compose_cfg(f"sweeps={sweep}", hydra=True).hydra.sweeper.params.model.split(",")
    ablations = {"cmfnet_no_mmf", "cmfnet_no_mfa", "cmfnet_no_mfa_mmf", "cmfnet_single"}
    assert set(PAPER_NAMES) | ablations <= set(models)
    assert set(models) <= set(METHOD_ORDER)  # every row has its place in the tables
    if sweep == "paper":  # the paper's sweep runs its methods in the tables' order
        assert models == [model for model in METHOD_ORDER if model in models]
