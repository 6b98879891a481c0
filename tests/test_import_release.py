"""`cmfnet import-release`: a checkpoint of the CMF-Net authors' release as a cmfnet checkpoint.

The release checkpoints here are written by the test: a tiny CMF-Net at the release's block
counts, its tensors renamed to the release's names (the importer's map, inverted), plus the
release's unused modules, wrapped as Lightning 0.8 does. That the map's release names are the
release's own is checked against `data/cmf_net_release_tensors.txt`, the state dict that the
release's `net` builds (names and shapes only).
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import CodeOnUnpickle

from cmfnet.cli import main
from cmfnet.commands.import_release.layout import release_layout
from cmfnet.commands.predict import (
    PredictionInputs,
    build_dataset,
    build_mask_func,
    degradation_from_config,
)
from cmfnet.data.synth import generate_dataset
from cmfnet.models import CMFNet
from cmfnet.runs.checkpoint import build_model_from_checkpoint
from cmfnet.runs.ownership import MARKER, owner_kind

RELEASE_TENSORS = Path(__file__).parent / "data" / "cmf_net_release_tensors.txt"
#: the release's net (its own code, run outside this repository) on release_reference_weights()
#: and release_reference_inputs(), eval mode, float64: rec (2, 1, 8, 8), sr (2, 1, 32, 32)
RELEASE_OUTPUTS = Path(__file__).parent / "data" / "cmf_net_release_outputs.npz"
SCALE = 4
HR = 32
TINY = dict(scale=SCALE, width=8, unet_width=8, mmf_reduction=4)  # release counts: 3 / 6 / 2


def cli(*args) -> int:
    return main([str(a) for a in args])


def tiny_source_model() -> CMFNet:
    """A tiny CMF-Net with random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    model = CMFNet(**TINY)
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buffer.uniform_(0.5, 1.5)
    return model.eval()


def release_state(model: CMFNet) -> dict:
    """``model``'s tensors under the release's names, plus the release's unused tensors."""
    mapping, unused = release_layout(model)
    ours = model.state_dict()
    state = {theirs: ours[name].clone() for theirs, name in mapping.items()}
    generator = torch.Generator().manual_seed(1)
    for name, (shape, _) in unused.items():
        state[name] = torch.randn(shape, generator=generator)
    return state


def save_release_checkpoint(path: Path, state: dict, prefix: str = "net.", **extra) -> Path:
    """Lightning 0.8's layout: prefixed state dict, epoch, step, hyperparameters."""
    checkpoint = {
        "epoch": 3,
        "global_step": 120,
        "pytorch-lightning_version": "0.8.1",
        "state_dict": {prefix + name: tensor for name, tensor in state.items()},
        "optimizer_states": [],
        "lr_schedulers": [],
        "hparams": {"accelerations": [4], "center_fractions": [0.08], "seed": 42},
    }
    checkpoint.update(extra)
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def source_model() -> CMFNet:
    return tiny_source_model()


@pytest.fixture(scope="module")
def release_ckpt(source_model, tmp_path_factory) -> Path:
    return save_release_checkpoint(
        tmp_path_factory.mktemp("release") / "epoch=3.ckpt", release_state(source_model)
    )


@pytest.fixture(scope="module")
def imported(release_ckpt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("imp") / "imported"
    assert cli("import-release", release_ckpt, "--out", out, "--quiet") == 0
    return out


def release_reference_weights() -> dict[str, torch.Tensor]:
    """Seeded weights for every tensor of the release's net (names and shapes from
    RELEASE_TENSORS, in its order): the weights `data/cmf_net_release_outputs.npz` was computed
    with, by the release's own network."""
    generator = torch.Generator().manual_seed(0)
    weights = {}
    for name, shape in read_release_tensors().items():
        if name.endswith("num_batches_tracked"):
            weights[name] = torch.zeros((), dtype=torch.long)
        elif name.endswith("running_var"):
            weights[name] = torch.rand(shape, generator=generator) + 0.5
        elif len(shape) >= 2:
            weights[name] = torch.randn(shape, generator=generator) / math.prod(shape[1:]) ** 0.5
        else:
            weights[name] = 0.1 * torch.randn(shape, generator=generator)
    return weights


def release_reference_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """(target, aux), (2, 1, 8, 8) each, float64: the inputs of the reference outputs."""
    generator = torch.Generator().manual_seed(1)
    target = torch.randn(2, 1, 8, 8, generator=generator, dtype=torch.float64)
    return target, torch.randn(2, 1, 8, 8, generator=generator, dtype=torch.float64)


def read_release_tensors() -> dict[str, tuple[int, ...]]:
    tensors = {}
    for line in RELEASE_TENSORS.read_text().splitlines():
        if line and not line.startswith("#"):
            name, shape = line.split(" ")
            tensors[name] = () if shape == "-" else tuple(int(s) for s in shape.split(","))
    return tensors


# --------------------------------------------------------------------------------------------
# the name map
# --------------------------------------------------------------------------------------------


def test_the_map_names_exactly_the_release_networks_tensors():
    with torch.device("meta"):
        model = CMFNet()  # the paper's size, x4: the release's net
    mapping, unused = release_layout(model)
    ours = model.state_dict()
    layout = {name: tuple(ours[our].shape) for name, our in mapping.items()}
    assert not set(layout) & set(unused)
    layout.update({name: shape for name, (shape, _) in unused.items()})
    assert layout == read_release_tensors()  # 546 tensors, every name and shape
    assert len(mapping) == len(ours) == 528  # every one of ours filled, by one release tensor
    assert sorted({name.split(".")[0] + "." + name.split(".")[1] for name in unused}) == [
        *(f"bf{i}.conv3" for i in range(1, 7)),
        "tail1.0",
        "tail1.1",
    ]


@pytest.mark.slow
def test_imported_release_weights_give_the_release_networks_outputs(tmp_path):
    """Full size (the release's net builds 64 channels): catches swapped tensors of equal shape
    (head1/head2, local_att/local_att2, conv1/conv2, ...), which the names and shapes cannot."""
    path = save_release_checkpoint(
        tmp_path / "release.ckpt", release_reference_weights(), prefix="Net.", hparams=None
    )
    assert cli("import-release", path, "--out", tmp_path / "out", "--quiet") == 0
    model, _ = build_model_from_checkpoint(tmp_path / "out" / "checkpoints" / "imported.ckpt")
    reference = np.load(RELEASE_OUTPUTS)
    with torch.no_grad():
        rec, sr = model.double()(*release_reference_inputs())
    np.testing.assert_allclose(rec.numpy(), reference["rec"], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(sr.numpy(), reference["sr"], rtol=1e-9, atol=1e-10)


# --------------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------------


def test_import_uses_every_tensor_and_reproduces_the_source_outputs(
    imported, source_model, release_ckpt
):
    assert owner_kind(imported) == "imported"
    model, config = build_model_from_checkpoint(imported / "checkpoints" / "imported.ckpt")
    assert {k: config["model"][k] for k in TINY} == TINY
    assert config["model"]["n_branch_steps"] == 6 and config["model"]["n_fusion_levels"] == 3
    for name, tensor in source_model.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor), name
    torch.manual_seed(2)
    target, aux = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        for got, want in zip(model(target, aux), source_model(target, aux)):
            torch.testing.assert_close(got, want, rtol=0, atol=0)

    record = json.loads((imported / "imported.json").read_text())
    _, unused = release_layout(source_model)
    assert record["source"] == str(release_ckpt.resolve()) and record["prefix"] == "net."
    assert record["tensors_mapped"] == len(source_model.state_dict())
    assert record["tensors_dropped"] == {name: reason for name, (_, reason) in unused.items()}
    assert len(record["tensors_dropped"]) == 12 + 6  # bf1..6.conv3 and tail1 at x4
    settings = {key: (v["value"], v["from"]) for key, v in record["settings"].items()}
    assert settings["accel"] == (4, "checkpoint") and settings["seed"] == (42, "checkpoint")
    assert settings["clamp"] == (6.0, "release default")
    assert settings["sr_stats_gain"] == (4.0, "release default")
    assert (config["accel"], config["center_fraction"], config["seed"]) == (4, 0.08, 42)
    assert config["mask"]["_target_"] == "cmfnet.mri.masks.RandomMaskFunc"
    assert config["data"]["clamp"] == 6.0 and config["data"]["sr_stats_gain"] == 4.0


def test_namespace_hyperparameters_with_paths_are_read_as_data_and_options_win(
    source_model, tmp_path
):
    hparams = argparse.Namespace(
        accelerations=[6],
        center_fractions=[0.08],
        mask_type="equispaced",
        seed=7,
        data_path=pathlib.PosixPath("/data/knee"),
    )
    path = save_release_checkpoint(
        tmp_path / "ns.ckpt",
        release_state(source_model),
        prefix="Net.",
        hparams=None,
        hyper_parameters=hparams,
    )
    out = tmp_path / "out"
    assert cli("import-release", path, "--out", out, "--accel", 8, "--quiet") == 0
    record = json.loads((out / "imported.json").read_text())
    settings = {key: (v["value"], v["from"]) for key, v in record["settings"].items()}
    assert record["prefix"] == "Net."
    assert settings["accel"] == (8, "option") and settings["seed"] == (7, "checkpoint")
    assert settings["center_fraction"] == (0.08, "checkpoint")
    assert settings["mask"] == ("equispaced", "checkpoint")
    _, config = build_model_from_checkpoint(out / "checkpoints" / "imported.ckpt")
    assert config["mask"]["_target_"] == "cmfnet.mri.masks.EquispacedMaskFunc"
    assert config["mask"]["accelerations"] == [8]


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda s: s.pop("unet2.conv.layers.4.weight"),
            "1 release tensor missing: unet2.conv.layers.4.weight",
        ),
        (lambda s: s.pop("bf3.conv3.bias"), "1 release tensor missing: bf3.conv3.bias"),
        (
            lambda s: s.update({"tail4.weight": torch.zeros(1, 8, 3, 3)}),
            "1 release tensor unexpected: tail4.weight",
        ),
        (
            lambda s: s.update({"mf1.conv2.weight": torch.zeros(8, 8, 5, 5)}),
            "1 release tensor of another shape: "
            "mf1.conv2.weight (8, 8, 5, 5), expected (8, 8, 3, 3)",
        ),
        (lambda s: s.pop("head2.weight"), "no release target head 'head2.weight'"),
    ],
)
def test_a_missing_extra_or_misshapen_tensor_is_refused_naming_it(
    change, message, source_model, tmp_path, capsys
):
    state = release_state(source_model)
    change(state)
    path = save_release_checkpoint(tmp_path / "bad.ckpt", state)
    assert cli("import-release", path, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cmfnet import-release: error: ")
    assert message in err and str(path) in err
    assert not (tmp_path / "out").exists()


def test_a_wrong_scale_or_tensors_outside_the_network_are_refused(
    release_ckpt, source_model, tmp_path, capsys
):
    assert cli("import-release", release_ckpt, "--out", tmp_path / "a", "--scale", 2) == 2
    assert "--scale 2: " in capsys.readouterr().err
    state = {"net." + k: v for k, v in release_state(source_model).items()}
    state["NMSE.total"] = torch.zeros(())
    path = tmp_path / "outside.ckpt"
    torch.save({"state_dict": state}, path)
    assert cli("import-release", path, "--out", tmp_path / "b") == 2
    assert "outside the network's prefix 'net.' (e.g. 'NMSE.total')" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# predict and evaluate take it
# --------------------------------------------------------------------------------------------


def test_predict_and_evaluate_take_the_imported_checkpoint(imported, source_model, tmp_path):
    data = generate_dataset(
        tmp_path / "synth", n_train=0, n_val=0, n_test=2, slices=2, hr_size=HR, width=36,
        progress=False,
    )  # fmt: skip
    split = data / "singlecoil_test"
    ckpt = imported / "checkpoints" / "imported.ckpt"
    out = tmp_path / "pred"
    assert cli("predict", ckpt, "--data", split, "--out", out, "--quiet") == 0
    _, config = build_model_from_checkpoint(ckpt)
    degradation = degradation_from_config(config, ckpt)
    dataset = build_dataset(
        PredictionInputs(split, data / "singlecoil_test_split_less.csv", "reconstruction_esc"),
        degradation,
        build_mask_func(degradation, ckpt),
    )
    sample = dataset[0]
    with torch.no_grad():
        rec, sr = source_model(sample.target_input[None], sample.aux_input[None])
    with h5py.File(out / sample.fname, "r") as hf:
        assert hf.attrs["sr_stats_gain"] == 4.0
        # the release's statistics are `scale` times ours: its SR output de-normalised with them
        np.testing.assert_allclose(
            hf["reconstruction"][sample.slice_idx],
            (sr * 4 * sample.std + 4 * sample.mean)[0, 0].numpy(),
            rtol=1e-5,
            atol=1e-6,
        )
        np.testing.assert_allclose(
            hf["reconstruction_lr"][sample.slice_idx],
            (rec * sample.std + sample.mean)[0, 0].numpy(),
            rtol=1e-5,
            atol=1e-6,
        )
    scores = tmp_path / "scores.json"
    evaluate = ("evaluate", "--target", split, "--predictions", out, "--only-predicted")
    assert cli(*evaluate, "--json", scores) == 0
    assert np.isfinite(json.loads(scores.read_text())["groups"]["all"]["psnr"])


# --------------------------------------------------------------------------------------------
# safety
# --------------------------------------------------------------------------------------------


def test_out_holding_a_users_file_is_refused_and_the_file_untouched(
    release_ckpt, imported, tmp_path, capsys
):
    mine = tmp_path / "mine"
    (mine / "checkpoints").mkdir(parents=True)
    users = mine / "checkpoints" / "imported.ckpt"
    users.write_bytes(b"a user's own checkpoint\n")
    assert cli("import-release", release_ckpt, "--out", mine) == 2
    assert "--out: " in capsys.readouterr().err
    assert users.read_bytes() == b"a user's own checkpoint\n"
    assert sorted(p.name for p in mine.rglob("*")) == ["checkpoints", "imported.ckpt"]
    # a folder import-release made is used again
    assert MARKER in {p.name for p in imported.iterdir()}
    assert cli("import-release", release_ckpt, "--out", imported, "--quiet") == 0


def test_a_checkpoint_with_pickled_code_is_refused_without_running_it(
    source_model, tmp_path, capsys
):
    marker = tmp_path / "code-ran"
    path = save_release_checkpoint(
        tmp_path / "evil.ckpt",
        release_state(source_model),
        hparams=argparse.Namespace(payload=CodeOnUnpickle(marker)),
    )
    assert cli("import-release", path, "--out", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "evil.ckpt: the checkpoint contains a pickled object" in err
    assert "_touch_marker" in err and "refusing" in err
    assert not marker.exists() and not (tmp_path / "out").exists()
