"""Tests of the networks: contract shapes, gradients, sizes against docs/model.md, ablations,
configs."""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from torch import nn

from cmfnet.models import (
    EDSR,
    CMFNet,
    JointModel,
    MultiContrastAggregation,
    MutualFusion,
    T2Net,
    UNetEDSR,
    ZeroFilled,
    build_model,
    format_summary,
    model_summary,
)
from cmfnet.models.blocks import ResBlock, UNet
from cmfnet.models.cmfnet import ConcatFusion
from cmfnet.models.t2net import HardAttentionTransfer

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
CMF_CONFIGS = [
    "cmfnet",
    "cmfnet_no_mfa",
    "cmfnet_no_mmf",
    "cmfnet_no_mfa_mmf",
    "cmfnet_single",
    "cmfnet_mmf_additive",
]
PIPELINE_CONFIGS = [
    "unet_edsr",
    "unet_edsr_mc",
    "unet_swinir",
    "mtrans_edsr",
    "mtrans_edsr_mc",
    "mtrans_swinir_mc",
]
MODEL_CONFIGS = CMF_CONFIGS + ["zero_filled", "edsr", "t2net"] + PIPELINE_CONFIGS
TRAINABLE_CONFIGS = [name for name in MODEL_CONFIGS if name != "zero_filled"]


def compose_model_cfg(name: str, scale: int, size: str):
    """The ``model`` node that ``conf/train.yaml`` composes for ``model=<name> scale=<scale>
    size=<size>`` (``size=tiny``: the model's preset in ``conf/model_preset/``)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=[f"model={name}", f"scale={scale}", f"size={size}"]).model


#: MTrans's position embeddings fix its image size: the tests' models take 16 x 16 images
MTRANS_SIDE = 16


def make(name: str, scale: int = 4, tiny: bool = True) -> nn.Module:
    """Model of config ``name`` at ``size=tiny`` or full size; full-size models are built on the
    meta device (no memory, no initialisation cost), which is enough for parameter counts and
    MAC counting. An MTrans stage is built for ``MTRANS_SIDE`` x ``MTRANS_SIDE`` images."""
    cfg = compose_model_cfg(name, scale, "tiny" if tiny else "full")
    torch.manual_seed(0)  # the same weights whatever ran before in this process (xdist)
    if name.startswith("mtrans"):
        cfg.reconstruction.input_size = MTRANS_SIDE
    with nullcontext() if tiny else torch.device("meta"):
        return build_model(cfg)


def n_params(*modules: nn.Module) -> int:
    return sum(p.numel() for module in modules for p in module.parameters())


def images(batch: int, height: int, width: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, 1, height, width, generator=generator) for _ in range(2))


# --- contract -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_CONFIGS)
@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("hw", [(16, 16), (15, 13)])
def test_output_shapes(name, scale, hw):
    if name.startswith("mtrans") and hw != (MTRANS_SIDE, MTRANS_SIDE):
        pytest.skip("MTrans takes only its input_size (tests/test_mtrans.py refuses the others)")
    model = make(name, scale).eval()
    target, aux = images(2, *hw)
    with torch.no_grad():
        rec, sr = model(target, aux)
    assert rec.shape == (2, 1, *hw)
    assert sr.shape == (2, 1, scale * hw[0], scale * hw[1])
    assert torch.isfinite(rec).all() and torch.isfinite(sr).all()


@pytest.mark.parametrize("name", TRAINABLE_CONFIGS)
def test_gradients_reach_every_parameter(name):
    model = make(name).train()
    assert model.trainable
    rec, sr = model(*images(2, 16, 16))
    loss = rec.mean() + sr.mean()
    pop = getattr(model, "pop_auxiliary_loss", None)  # MTrans's guide loss, as training adds it
    extra = pop() if pop is not None else None
    (loss if extra is None else loss + extra).backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name


@pytest.mark.parametrize(
    "name, uses_aux",
    [
        ("cmfnet", True),
        ("cmfnet_no_mfa", True),
        ("cmfnet_single", False),
        ("edsr", False),
        ("unet_edsr", False),
        ("unet_edsr_mc", True),
        ("unet_swinir", False),
        ("mtrans_edsr", False),
        ("mtrans_edsr_mc", True),
        ("mtrans_swinir_mc", True),
        ("t2net", False),
        ("zero_filled", False),
    ],
)
def test_auxiliary_input_is_used_only_by_multi_contrast_models(name, uses_aux):
    model = make(name).eval()
    target, aux = images(2, 16, 16)
    with torch.no_grad():
        first = model(target, aux)
        second = model(target, torch.randn_like(aux))
    changed = any(not torch.equal(a, b) for a, b in zip(first, second))
    assert changed == uses_aux


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: CMFNet(scale=3), "model.scale"),
        (lambda: CMFNet(fusion="sum"), "model.fusion"),
        (lambda: CMFNet(width=10, mmf_reduction=4), "mmf_reduction"),
        (lambda: CMFNet(n_branch_steps=0), "model.n_branch_steps"),
        (lambda: CMFNet(mfa_kernel_sizes=[1, 2]), "model.mfa_kernel_sizes"),
        (lambda: CMFNet(res_scale=0.0), "model.res_scale"),
        (lambda: ZeroFilled(scale=3), "model.scale"),
        (lambda: EDSR(scale=6), "model.scale"),
        (lambda: UNetEDSR(unet_pools=0), "model.reconstruction.pools"),
        (lambda: T2Net(attention_chunk=-1), "model.attention_chunk"),
        (lambda: T2Net(head_kernel_size=4), "model.head_kernel_size"),
    ],
)
def test_invalid_constructor_arguments_raise(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


# --- CMF-Net sizes (docs/model.md states them) ------------------------------------------------


def test_cmfnet_block_parameter_counts_match_docs_model_md():
    model = make("cmfnet", tiny=False)
    assert isinstance(model, CMFNet)
    assert n_params(model.head_target) == n_params(model.head_aux) == 640
    assert n_params(model.target_blocks[0]) == n_params(model.aux_blocks[0]) == 73_856
    assert n_params(model.sr_blocks[0]) == 73_856
    assert isinstance(model.fusions[0], MultiContrastAggregation)
    assert n_params(model.fusions[0]) == 217_344
    assert n_params(model.rec_blocks[0]) == 7_520_320
    assert n_params(model.mutual_fusions[0]) == 156_736
    assert n_params(model.sr_tail) == 296_001
    assert n_params(model.rec_tail) == 577
    assert (len(model.fusions), len(model.rec_blocks), len(model.mutual_fusions)) == (3, 6, 6)
    assert n_params(model) == 47_898_498
    assert all(p.requires_grad for p in model.parameters())


def test_cmfnet_x2_differs_from_x4_by_one_upsampling_stage():
    x4, x2 = CMFNet(scale=4, width=8, unet_width=8), CMFNet(scale=2, width=8, unet_width=8)
    one_stage = n_params(x4.sr_tail[0][0])
    assert len(x4.sr_tail[0]) == 4 and len(x2.sr_tail[0]) == 2
    assert n_params(x4) - n_params(x2) == one_stage == 9 * 8 * 32 + 32


def test_cmfnet_macs_match_docs_model_md():
    model = make("cmfnet", tiny=False)
    assert model_summary(model, (80, 80)).macs == pytest.approx(80e9, rel=0.01)
    assert model_summary(model, (56, 56)).macs == pytest.approx(39e9, rel=0.01)


def reference_cmfnet_forward(model: CMFNet, target, aux):
    """docs/model.md's data flow written out from the model's blocks."""
    t0 = model.head_target(target)
    f = t0
    if model.use_aux:
        a = model.head_aux(aux)
        for k in range(len(model.target_blocks)):
            a = model.aux_blocks[k](a)
            f = model.fusions[k](a, model.target_blocks[k](f))
    else:
        for block in model.target_blocks:
            f = block(f)
    r = s = f
    for i in range(len(model.rec_blocks)):
        r = model.rec_blocks[i](r)
        s = model.sr_blocks[i](s)
        if model.mutual_fusions is not None:
            s, r = model.mutual_fusions[i](s, r)
    return model.rec_tail(r + t0), model.sr_tail[1](model.sr_tail[0](s + t0))


@pytest.mark.parametrize("name", CMF_CONFIGS)
def test_cmfnet_data_flow_matches_docs_model_md(name):
    model = make(name).eval()
    target, aux = images(2, 12, 12)
    with torch.no_grad():
        for output, expected in zip(
            model(target, aux), reference_cmfnet_forward(model, target, aux)
        ):
            torch.testing.assert_close(output, expected)


def test_resblock_scales_the_residual():
    block = ResBlock(width=4, res_scale=0.1)
    x = torch.randn(2, 4, 5, 5)
    expected = x + 0.1 * block.body[2](torch.relu(block.body[0](x)))
    torch.testing.assert_close(block(x), expected)


# --- ablations --------------------------------------------------------------------------------


def test_ablations_remove_exactly_their_blocks():
    full = make("cmfnet", tiny=False)
    total = n_params(full)
    mfa, mmf = n_params(full.fusions), n_params(full.mutual_fusions)

    no_mfa = make("cmfnet_no_mfa", tiny=False)
    assert all(isinstance(f, ConcatFusion) for f in no_mfa.fusions)
    assert not any(isinstance(m, MultiContrastAggregation) for m in no_mfa.modules())
    assert total - n_params(no_mfa) == mfa - n_params(no_mfa.fusions)
    assert n_params(no_mfa.fusions[0]) == 9 * 128 * 64 + 64
    del no_mfa

    no_mmf = make("cmfnet_no_mmf", tiny=False)
    assert not any(isinstance(m, MutualFusion) for m in no_mmf.modules())
    assert total - n_params(no_mmf) == mmf == 6 * 156_736
    del no_mmf

    no_both = make("cmfnet_no_mfa_mmf", tiny=False)
    assert not any(
        isinstance(m, (MutualFusion, MultiContrastAggregation)) for m in no_both.modules()
    )
    assert total - n_params(no_both) == mfa - n_params(no_both.fusions) + mmf
    del no_both

    single = make("cmfnet_single", tiny=False)
    assert not hasattr(single, "head_aux") and not hasattr(single, "fusions")
    assert len(single.target_blocks) == 3
    assert total - n_params(single) == n_params(full.head_aux, full.aux_blocks, full.fusions)


def test_mutual_fusion_rejects_batch_of_one_in_training():
    fusion = MutualFusion(width=8, reduction=4)
    sr, rec = torch.randn(1, 8, 6, 6), torch.randn(1, 8, 6, 6)
    with pytest.raises(ValueError, match="batch size >= 2"):
        fusion.train()(sr, rec)
    out_sr, out_rec = fusion.eval()(sr, rec)
    assert out_sr.shape == out_rec.shape == (1, 8, 6, 6)
    fusion.train()(torch.randn(2, 8, 6, 6), torch.randn(2, 8, 6, 6))

    with pytest.raises(ValueError, match="data.batch_size"):
        make("cmfnet").train()(*images(1, 12, 12))
    make("cmfnet_no_mmf").train()(*images(1, 12, 12))


def test_mutual_fusion_formula():
    fusion = MutualFusion(width=8, reduction=4).eval()
    sr, rec = torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5)
    local_s, local_r = fusion.sr_local(sr), fusion.rec_local(rec)
    global_s = fusion.sr_global(sr.mean(dim=(2, 3), keepdim=True))
    global_r = fusion.rec_global(rec.mean(dim=(2, 3), keepdim=True))
    message = fusion.local_message(torch.cat([local_s, local_r], 1)) + fusion.global_message(
        torch.cat([global_s, global_r], 1)
    )
    out_sr, out_rec = fusion(sr, rec)
    torch.testing.assert_close(out_sr, sr * torch.sigmoid(local_s + global_s) + message)
    torch.testing.assert_close(out_rec, rec * torch.sigmoid(local_r + global_r) + message)

    additive = MutualFusion(width=8, reduction=4, update="additive").eval()
    additive.load_state_dict(fusion.state_dict())
    add_sr, add_rec = additive(sr, rec)
    torch.testing.assert_close(add_sr, sr + message)
    torch.testing.assert_close(add_rec, rec + message)
    with pytest.raises(ValueError, match="mmf_update"):
        MutualFusion(width=8, reduction=4, update="gate")


def test_additive_mmf_variant_keeps_the_parameters_and_drops_only_the_gate():
    gated, additive = make("cmfnet", tiny=False), make("cmfnet_mmf_additive", tiny=False)
    assert n_params(additive) == n_params(gated)
    assert [m.gated for m in additive.mutual_fusions] == [False] * 6
    assert all(m.gated for m in gated.mutual_fusions)


def test_multi_contrast_aggregation_formula():
    mfa = MultiContrastAggregation(width=4)
    aux, target = torch.randn(2, 4, 7, 7), torch.randn(2, 4, 7, 7)
    gated = [torch.cat([c(aux), target], 1) for c in mfa.aux_convs]
    expected = mfa.project(sum(g * torch.sigmoid(g) for g in gated))
    assert [c.kernel_size for c in mfa.aux_convs] == [(1, 1), (3, 3), (5, 5)]
    torch.testing.assert_close(mfa(aux, target), expected)


# --- U-Net ------------------------------------------------------------------------------------


def test_unet_reflect_pads_odd_sizes_and_crops_back():
    torch.manual_seed(0)
    unet = UNet(in_channels=1, out_channels=1, width=4, pools=2).eval()
    x = torch.randn(1, 1, 15, 13)
    padded = F.pad(x, (1, 2, 0, 1), mode="reflect")
    with torch.no_grad():
        out = unet(x)
        expected = unet(padded)[..., 0:15, 1:14]
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected)


def test_unet_too_small_input_raises_clear_error():
    with pytest.raises(ValueError, match="too small"):
        UNet(1, 1, width=4, pools=4)(torch.randn(1, 1, 5, 5))


# --- baselines --------------------------------------------------------------------------------


def test_zero_filled_is_input_and_bicubic():
    model = make("zero_filled", tiny=False)
    assert isinstance(model, ZeroFilled) and not model.trainable and n_params(model) == 0
    target, aux = images(2, 9, 11)
    rec, sr = model(target, aux)
    assert torch.equal(rec, target)
    torch.testing.assert_close(
        sr, F.interpolate(target, scale_factor=4, mode="bicubic", align_corners=False)
    )


def test_edsr_passes_input_through_as_reconstruction():
    model = make("edsr").eval()
    target, aux = images(2, 9, 9)
    rec, sr = model(target, aux)
    assert torch.equal(rec, target)
    torch.testing.assert_close(sr, model.super_resolve(target))


def test_unet_edsr_is_residual_reconstruction_then_edsr():
    model = make("unet_edsr_mc").eval()
    assert model.reconstructor.down_blocks[0][0].in_channels == 2
    target, aux = images(2, 12, 12)
    with torch.no_grad():
        rec, sr = model(target, aux)
        torch.testing.assert_close(sr, model.super_resolver.super_resolve(rec))
        nn.init.zeros_(model.reconstructor.out_conv.weight)
        nn.init.zeros_(model.reconstructor.out_conv.bias)
        assert torch.equal(model(target, aux)[0], target)


@pytest.mark.parametrize("name", ["cmfnet", "edsr", "t2net"])
def test_full_config_matches_class_defaults(name):
    model = make(name, tiny=False)
    with torch.device("meta"):
        default = type(model)(scale=4)
    assert n_params(model) == n_params(default)


@pytest.mark.parametrize("name", PIPELINE_CONFIGS)
def test_full_pipeline_stages_match_their_class_defaults(name):
    model = make(name, tiny=False)
    stages = {"reconstructor": {"guided": model.reconstructor.guided}, "super_resolver": {}}
    if name.startswith("mtrans"):
        stages["reconstructor"]["input_size"] = model.reconstructor.input_size
    stages["super_resolver"]["scale"] = 4
    with torch.device("meta"):
        for attribute, arguments in stages.items():
            stage = getattr(model, attribute)
            assert n_params(stage) == n_params(type(stage)(**arguments)), attribute


# --- T2Net ------------------------------------------------------------------------------------


def reference_hard_attention(query, key, value):
    """T2Net's search and transfer with the full relevance matrix, written out directly."""
    q = F.normalize(F.unfold(query, 3, padding=1), dim=1)
    k = F.normalize(F.unfold(key, 3, padding=1), dim=1)
    relevance = torch.bmm(k.transpose(1, 2), q)
    soft, index = relevance.max(dim=1)
    v = F.unfold(value, 3, padding=1)
    gathered = torch.stack([v[b][:, index[b]] for b in range(v.shape[0])])
    transferred = F.fold(gathered, query.shape[-2:], 3, padding=1) / 9
    return soft.view(query.shape[0], 1, *query.shape[-2:]), transferred


@pytest.mark.parametrize("chunk", [0, 5, 1000])
def test_hard_attention_matches_reference(chunk):
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 4, 7, 9) for _ in range(3))
    soft, transferred = HardAttentionTransfer(chunk)(query, key, value)
    expected_soft, expected_transferred = reference_hard_attention(query, key, value)
    torch.testing.assert_close(soft, expected_soft)
    torch.testing.assert_close(transferred, expected_transferred)


def test_t2net_data_flow():
    torch.manual_seed(0)
    model = T2Net(scale=2, width=8, n_resblocks=2).eval()
    target, aux = images(2, 7, 8)
    sr_head, rec_head = model.sr_head(target), model.rec_head(target)
    sr, rec = sr_head, rec_head
    for i in range(2):
        sr, rec = model.sr_blocks[i](sr), model.rec_blocks[i](rec)
        soft, transferred = reference_hard_attention(sr, rec, rec)
        sr = sr + model.transfer_convs[i](torch.cat([sr, transferred], 1)) * soft
    expected_rec = model.rec_tail(model.rec_body_end(rec) + rec_head) + target
    expected_sr = model.sr_tail(model.sr_body_end(sr) + sr_head)
    rec_out, sr_out = model(target, aux)
    torch.testing.assert_close(rec_out, expected_rec)
    torch.testing.assert_close(sr_out, expected_sr)


def test_t2net_chunked_attention_equals_unchunked():
    torch.manual_seed(0)
    unchunked = T2Net(scale=2, width=8, n_resblocks=2)
    chunked = T2Net(scale=2, width=8, n_resblocks=2, attention_chunk=7)
    chunked.load_state_dict(unchunked.state_dict())
    target, aux = images(2, 9, 11)
    outputs = [model(target, aux) for model in (unchunked, chunked)]
    for model, (rec, sr) in zip((unchunked, chunked), outputs):
        (rec.mean() + sr.mean()).backward()
    for a, b in zip(*outputs):
        torch.testing.assert_close(a, b)
    for (name, a), b in zip(unchunked.named_parameters(), chunked.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)


def test_hard_attention_bounds_relevance_block_to_chunk(monkeypatch):
    widths = []

    def recording_bmm(a, b):
        widths.append(b.shape[-1])
        return torch.matmul(a, b)

    monkeypatch.setattr(torch, "bmm", recording_bmm)
    query = torch.randn(1, 4, 6, 6)
    HardAttentionTransfer(chunk=10)(query, query, query)
    assert widths == [10, 10, 10, 6]


def test_t2net_size():
    model = make("t2net", tiny=False)
    assert n_params(model) == 1_620_994
    assert n_params(model.sr_blocks[0]) == 73_856
    assert n_params(model.sr_tail) == 296_001


# --- configs and summary ------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_configs_instantiate_full_and_tiny(name):
    full = make(name, tiny=False)
    tiny = make(name, tiny=True)
    assert type(full) is type(tiny)
    assert isinstance(full, JointModel) and full.scale == tiny.scale == 4
    if name == "zero_filled":
        assert n_params(full) == n_params(tiny) == 0
    else:
        assert full.trainable and n_params(tiny) < n_params(full) / 10


def test_build_model_follows_root_scale_and_rejects_uncomposed_defaults():
    assert make("cmfnet_no_mfa", scale=2).scale == 2
    with pytest.raises(ValueError, match="defaults"):
        build_model({"defaults": ["cmfnet"], "_target_": "cmfnet.models.CMFNet"})


def test_build_model_reads_run_configs_saved_with_loss_weights_in_the_model():
    saved = {
        "_target_": "cmfnet.models.T2Net",
        "scale": 2,
        "width": 8,
        "n_resblocks": 1,
        "loss_weights": {"rec": 0.2, "sr": 0.8},
    }  # T2Net checkpoints from before conf/loss/recipe/
    assert isinstance(build_model(saved), T2Net)


def test_summary_totals_and_mac_scaling():
    model = make("cmfnet")
    small, large = model_summary(model, (16, 16), scale=4), model_summary(model, (32, 32))
    total = sum(p.numel() for p in model.parameters())
    assert small.total_params == small.trainable_params == total
    assert sum(block.params for block in small.blocks) == total
    assert sum(block.macs for block in small.blocks) == small.macs
    assert small.output_hw == (64, 64)
    assert 3.9 < large.macs / small.macs <= 4.0
    assert next(model.parameters()).device.type == "cpu"
    text = format_summary(small)
    assert "rec_blocks" in text and f"{total:,}" in text
    with pytest.raises(ValueError, match="x2"):
        model_summary(model, (16, 16), scale=2)


def test_summary_counts_t2net_attention():
    model = T2Net(width=8, n_resblocks=2)
    summary = model_summary(model, (10, 10))
    attention = next(block for block in summary.blocks if block.name == "attention")
    assert attention.macs == 2 * (10 * 10) ** 2 * 9 * 8


def test_unet_too_deep_for_its_input_gives_a_clear_error():
    from cmfnet.models.blocks import UNet

    unet = UNet(1, 1, width=4, pools=4)
    with pytest.raises(ValueError, match="16x16 with 4 pools leaves a 1x1 bottleneck"):
        unet(torch.randn(2, 1, 16, 16))
    assert unet(torch.randn(2, 1, 24, 24)).shape == (2, 1, 24, 24)
