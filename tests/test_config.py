"""Configs compose through Hydra's compose API and every model x data x mask instantiates."""

import itertools
from pathlib import Path

import hydra
import pytest
import torch
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import InterpolationResolutionError

from cmfnet.commands.report.records import METHOD_ORDER
from cmfnet.lit import injections
from cmfnet.models import JointModel
from cmfnet.runs.config import sanitize_config

MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
DATA = ["synthetic", "fastmri_knee", "isles", "ixi"]
MASKS = ["random", "equispaced", "equispaced_fraction"]
EXPERIMENTS = [None, "smoke", "quickstart", "paper_small"]


@pytest.fixture(autouse=True)
def in_own_folder(tmp_path, monkeypatch):
    """Each test in its own folder, where :func:`_compose` puts the run's folders (two xdist
    workers never share one)."""
    monkeypatch.chdir(tmp_path)


def _compose(*overrides: str):
    """The composed train config, its output and cache folders in the current folder."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.output_dir = str(Path.cwd() / "out")
        cfg.paths.cache_dir = str(Path.cwd() / "cache")
        cfg.hydra.runtime.output_dir = cfg.paths.output_dir
    return cfg


def test_every_model_is_offered():
    """Every method the report places in its tables (the paper's, the ablations, the
    references) has a model config."""
    assert set(METHOD_ORDER) <= set(MODELS)


@pytest.mark.parametrize("model, data, mask", list(itertools.product(MODELS, DATA, MASKS)))
def test_every_combination_instantiates(model, data, mask, tmp_path):
    overrides = [
        f"model={model}",
        f"data={data}",
        f"mask={mask}",
        "experiment=smoke",
        "scale=2",
        "accel=8",
    ]
    if data != "synthetic":
        overrides.append(f"data.root={tmp_path}")
    cfg = _compose(*overrides, "seed=7")
    datamodule = hydra.utils.instantiate(cfg.data, **injections.data_kwargs(cfg))
    mask_func = datamodule.mask_func
    assert mask_func.accelerations == [8] and mask_func.center_fractions == [0.04]
    assert (datamodule.scale, datamodule.seed) == (2, 7)
    assert set(datamodule.splits) == {"train", "val", "test"}
    net = hydra.utils.instantiate(cfg.model)
    assert getattr(net, "scale", 2) == 2
    loss = hydra.utils.instantiate(cfg.loss)
    module = hydra.utils.instantiate(cfg.module, _partial_=True)(
        **injections.module_kwargs(net, loss, {"seed": 7})
    )
    assert module.model is net and module.loss is loss
    trainer = hydra.utils.instantiate(
        cfg.trainer, **injections.trainer_kwargs(cfg, [], [], tmp_path / "run")
    )
    assert trainer.default_root_dir == str(tmp_path / "run") and trainer.loggers == []


@pytest.mark.parametrize(
    "cuda, capability, trainer, expected",
    [
        (False, None, "default", ("32-true", False, False, 2)),
        (True, (9, 0), "default", ("bf16-mixed", True, True, 4)),  # H100 / H200
        (True, (7, 0), "default", ("32-true", True, True, 4)),  # V100: no native bf16
        (True, (9, 0), "cpu", ("32-true", False, True, 4)),
        (True, (9, 0), "gpu", ("bf16-mixed", True, True, 4)),
        (True, (7, 0), "ddp", ("32-true", True, True, 4)),
    ],
)
def test_gpu_defaults_follow_the_device_the_job_sees(
    monkeypatch, cuda, capability, trainer, expected
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    cfg = _compose(f"trainer={trainer}")
    assert (
        cfg.trainer.precision,
        cfg.trainer.benchmark,
        cfg.data.pin_memory,
        cfg.data.num_workers,
    ) == expected


def test_center_fraction_follows_acceleration_unless_set():
    assert _compose("accel=4").center_fraction == 0.08
    assert _compose("accel=8").center_fraction == 0.04
    assert _compose("accel=8", "center_fraction=0.1").mask.center_fractions == [0.1]


@pytest.mark.parametrize("model, experiment", list(itertools.product(MODELS, EXPERIMENTS)))
def test_the_model_node_is_exactly_the_model_arguments(model, experiment):
    overrides = [f"model={model}"] + ([f"experiment={experiment}"] if experiment else [])
    if model.startswith("mtrans") and experiment in ("quickstart", "paper_small"):
        # HR 80 at x4 leaves 20x20 LR images, which MTrans's CPU patches (4, 8) cannot tile
        with pytest.raises(Exception, match=r"model\.reconstruction\.input_size = 20 is not"):
            hydra.utils.instantiate(_compose(*overrides).model)
        overrides.append("scale=2")
    cfg = _compose(*overrides)
    with torch.device("meta"):  # full-size models: no memory, no initialisation
        net = hydra.utils.instantiate(cfg.model)
    assert isinstance(net, JointModel) and net.scale == cfg.scale


def test_smoke_selects_the_tiny_presets_of_the_model_and_data():
    full, tiny = _compose(), _compose("experiment=smoke")
    assert full.hydra.runtime.choices.size == "full" and tiny.hydra.runtime.choices.size == "tiny"
    assert (full.model.width, full.model.n_branch_steps) == (64, 6)
    assert (tiny.model.width, tiny.model.unet_width, tiny.model.n_branch_steps) == (8, 8, 2)
    assert full.data.synthesize.hr_size == 320 and tiny.data.synthesize.hr_size == 64
    assert (tiny.data.batch_size, tiny.data.num_workers, tiny.data.fill_cache) == (2, 0, False)
    assert (
        str(tiny.data.synthesize.hr_size) in tiny.data.root
    )  # the cache folder follows the settings
    knee = _compose("experiment=smoke", "data=fastmri_knee", "data.root=/knee")
    assert (knee.data.batch_size, knee.data.num_workers, knee.data.fill_cache) == (2, 0, False)
    ixi = _compose("experiment=smoke", "data=ixi", "data.root=/ixi").data
    assert (ixi.batch_size, ixi.num_workers, ixi.fill_cache) == (2, 0, False)
    assert [ixi.splits[s].slice_step for s in ("train", "val", "test")] == [10, 10, 10]


@pytest.mark.parametrize("model", [m for m in MODELS if m != "zero_filled"])
def test_every_trainable_model_has_a_tiny_preset(model):
    tiny = _compose(f"model={model}", "size=tiny").model
    if "reconstruction" in tiny:  # a pipeline: each stage shrunk by its own preset
        full = _compose(f"model={model}").model
        for stage in ("reconstruction", "super_resolution"):
            assert tiny[stage]._target_ == full[stage]._target_
            assert tiny[stage] != full[stage], stage
        with torch.device("meta"):
            assert sum(p.numel() for p in hydra.utils.instantiate(tiny).parameters()) < 50_000
    else:
        assert tiny.width == 8


def test_command_line_values_win_over_the_tiny_preset_and_invalid_widths_are_not_clamped():
    cfg = _compose("experiment=smoke", "data.batch_size=4", "model.width=12")
    preset = _compose("experiment=smoke")
    assert (cfg.data.batch_size, cfg.model.width) == (4, 12) and preset.data.batch_size != 4
    assert cfg.model.unet_width == preset.model.unet_width  # keys not given keep the preset's value
    assert _compose("experiment=smoke", "size=full").model.width == 64  # the size choice too
    halved = _compose("model.width=32", "width_factor=0.5")
    assert (halved.model.width, halved.model.unet_width) == (
        32,
        64,
    )  # a command-line width is exact
    assert (
        _compose("model.width=0", "width_factor=0.5").model.width == 0
    )  # left for the model to refuse
    with pytest.raises(
        InterpolationResolutionError, match=r"width_factor must be a number > 0, got 0"
    ):
        OmegaConf.to_container(_compose("width_factor=0").model, resolve=True)


def test_named_sweeps_are_multiruns_with_parameters():
    for name in (
        "grid",
        "ablation",
        "baselines",
        "loss_weights",
        "paper",
        "paper_small",
        "paper_small_seeds",
    ):
        cfg = _compose(f"sweeps={name}")
        assert str(cfg.hydra.mode) == "RunMode.MULTIRUN", name
        assert cfg.hydra.sweeper.params, name
        assert cfg.sweep_name == name


def test_small_protocol_shrinks_every_width_by_one_rule_and_seed_cells_set_scale_and_accel():
    cfg = _compose("sweeps=paper_small", "model=unet_edsr")
    stages = cfg.model.super_resolution, cfg.model.reconstruction
    assert (stages[0].width, stages[1].width, stages[0].n_resblocks) == (16, 8, 16)
    for experiment in ("paper_small", "quickstart"):
        cmf = OmegaConf.to_container(_compose(f"experiment={experiment}").model, resolve=True)
        assert (cmf["width"], cmf["unet_width"], cmf["n_branch_steps"]) == (
            16,
            32,
            6,
        )  # 64 and 128 x 1/4
    assert (
        _compose("experiment=paper_small", "model=edsr", "width_factor=0.01").model.width == 4
    )  # the floor
    assert cfg.data.synthesize.hr_size == 80 and cfg.optimizer.lr == 1e-3
    seeds = _compose("sweeps=paper_small_seeds", "+cell=x2r4")
    assert (seeds.scale, seeds.accel) == (2, 4)
    assert "scale" not in seeds.hydra.sweeper.params


def test_launchers_select_hydra_launchers():
    assert "BasicLauncher" in _compose("launcher=local").hydra.launcher._target_
    assert "cmfnet_launchers.slurm_launcher" in _compose("launcher=slurm").hydra.launcher._target_
    assert "GPUPoolLauncher" in _compose("launcher=gpus").hydra.launcher._target_


def test_secrets_never_survive_sanitising(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "fake-key-0123456789abcdef")
    config = {
        "logger": {"api_key": "x", "note": "uses fake-key-0123456789abcdef"},
        "lr": 1e-5,
        "items": ["a"],
    }
    clean = sanitize_config(config)
    assert clean["logger"]["api_key"] == "<redacted>"
    assert "fake-key" not in str(clean)
    assert clean["lr"] == 1e-5 and clean["items"] == ["a"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("seed=1.5", "seed must be an integer in [0, 2**32), got 1.5"),
        ("seed=-1", "seed must be an integer in [0, 2**32), got -1"),
        ("scale=abc", "scale must be an integer, got 'abc'"),
        ("accel=four", "accel must be a finite number > 1, got 'four'"),
        ("accel=inf", "accel must be a finite number > 1, got inf"),
        ("accel=1", "accel must be a finite number > 1, got 1"),
        ("trainer.max_epochs=1.5", "trainer.max_epochs must be an integer >= -1"),
        ("optimizer.lr=abc", "optimizer.lr must be a finite number > 0, got 'abc'"),
        ("test_checkpoint=first", "test_checkpoint must be 'best' or 'last', got 'first'"),
        ("summary_input_hw=[0,0]", "summary_input_hw must be two positive integers"),
    ],
)
def test_top_level_settings_of_the_wrong_type_are_named(override, message):
    from cmfnet.runs.settings import check_settings

    with pytest.raises(ValueError) as raised:
        check_settings(_compose(override))
    assert str(raised.value).startswith(message)
    check_settings(_compose())  # the defaults pass


@pytest.mark.parametrize(
    "key, value",
    [("batch_size", "abc"), ("eval_batch_size", -3), ("num_workers", -1), ("batch_size", 2.5)],
)
def test_loader_settings_of_the_wrong_type_are_named(key, value, tmp_path):
    from cmfnet.lit.datamodule import JointDataModule

    settings = {"batch_size": 2, key: value}
    with pytest.raises(ValueError, match=rf"^data\.{key} must be an integer >= \d, got {value!r}$"):
        JointDataModule(root=str(tmp_path), splits={}, mask_func=None, scale=2, **settings)


def test_job_folder_names_stay_one_folder_with_paths_in_values_and_stay_short():
    from cmfnet.runs.config import folder_name

    assert folder_name("data.root=/data/knee,scale=2") == "data.root=_data_knee,scale=2"
    long = "mask.path=/" + "x" * 400
    short = folder_name(long)
    assert "/" not in short and len(short.encode()) <= 160 and short != folder_name(long + "y")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "mask=fixed",
                "mask.path=/tmp/m.npy",
                "data=fastmri_knee",
                "data.root=/d/knee",
            ],
            return_hydra_config=True,
        )
    assert "data.root" in cfg.hydra.job.config.override_dirname.exclude_keys


def test_secret_overrides_stay_out_of_folder_names_and_printed_text(capsys, monkeypatch):
    from cmfnet.runs.config import folder_name, redacted_console, secrets_in_use

    assert folder_name("+hf_token=abc-secret-1,scale=2") == "scale=2"
    monkeypatch.setenv("MY_API_KEY", "env-secret-value")
    secrets = secrets_in_use(["run.py", "+hf_token=abc-secret-1", "scale=2"])
    assert secrets >= {"abc-secret-1", "env-secret-value"}
    with redacted_console(secrets):
        print("srun python run.py +hf_token=abc-secret-1 key env-secret-value")
    print("after abc-secret-1")
    out = capsys.readouterr().out
    assert "+hf_token=<redacted> key <redacted>" in out and "after abc-secret-1" in out


def test_fastmri_knee_expects_pd_guiding_pdfs_in_every_split():
    data = _compose("data=fastmri_knee", "data.root=/knee").data
    expected = {"aux": "CORPD_FBK", "target": "CORPDFS_FBK"}
    for split in ("train", "val", "test"):
        assert OmegaConf.to_container(data.splits[split].contrasts, resolve=True) == expected
    relaxed = _compose("data=fastmri_knee", "data.root=/knee", "data.splits.train.contrasts=null")
    assert relaxed.data.splits.val.contrasts is None  # val and test follow train


def test_scaled_width_rounds_to_a_multiple_and_lowres_side_follows_the_data():
    cfg = _compose("width_factor=0.25")
    from cmfnet.runs.config import lowres_side, scaled_width

    assert scaled_width(180, 6, _root_=cfg) == 48  # 45 -> the nearest multiple of the 6 heads
    assert scaled_width(60, 6, _root_=cfg) == 18 and scaled_width(64, _root_=cfg) == 16
    assert scaled_width(8, 6, _root_=cfg) == 6  # never below one multiple
    with pytest.raises(ValueError, match="the multiple must be a positive integer, got 0"):
        scaled_width(64, 0, _root_=cfg)
    assert lowres_side(_root_=_compose("scale=4")) == 80  # synthetic data, HR 320
    assert lowres_side(_root_=_compose("experiment=hr160", "scale=2")) == 80
    knee = _compose("data=fastmri_knee", "data.root=/knee", "scale=2")
    assert lowres_side(_root_=knee) == 160  # fastMRI's 320 x 320 targets
    isles = _compose("data=isles", "data.root=/isles", "scale=4")
    assert lowres_side(_root_=isles) == 56  # ISLES 224 x 224
    ixi = _compose("data=ixi", "data.root=/ixi", "scale=4")
    assert lowres_side(_root_=ixi) == 64  # IXI 256 x 256
    with pytest.raises(ValueError, match="scale=3 does not divide the HR size 320x320"):
        lowres_side(_root_=_compose("scale=3"))
