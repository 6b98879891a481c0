"""The parts the training task composes: W&B's name, group and tags from the config (the values
metrics.json records), the start-up timer callback, and a module given its run config."""

from __future__ import annotations

import json

import hydra
import lightning as L
import pytest
import torch
from conftest import CONF_DIR
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.demos.boring_classes import BoringModel
from omegaconf import OmegaConf, open_dict

from cmfnet.data.synth_cache import GENERATOR, SYNTH_RECORD
from cmfnet.lit import injections
from cmfnet.lit.module import JointRecSRModule
from cmfnet.lit.startup import STARTUP_KEYS, StartupTimer, startup_times
from cmfnet.runs.settings import run_identity


@pytest.fixture
def job_config(tmp_path):
    """``job_config(*overrides, mode=RunMode.RUN)``: the train config as a job sees it, with
    Hydra's config of the job set (what ``${hydra:...}`` reads)."""

    def make(*overrides: str, mode: RunMode = RunMode.RUN):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
        with open_dict(cfg):
            cfg.hydra.mode = mode
            cfg.hydra.runtime.output_dir = str(tmp_path / "out")
            cfg.hydra.sweep.dir = str(tmp_path / "multirun" / "grid" / "2024-01-02_03-04-05_678")
            cfg.paths.cache_dir = str(tmp_path / "cache")
        HydraConfig.instance().set_config(cfg)
        return cfg

    yield make
    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()


def wandb_settings(cfg) -> dict:
    """The W&B logger's resolved name, group and tags."""
    node = OmegaConf.to_container(cfg.logger.wandb, resolve=True)
    return {key: node[key] for key in ("name", "group", "tags")}


def test_the_wandb_run_is_named_and_tagged_by_the_run_identity(job_config):
    cfg = job_config("model=edsr", "mask=equispaced", "scale=2", "accel=8", "seed=7")
    identity = run_identity(cfg)
    assert identity == {
        "model": "edsr",
        "scale": 2,
        "accel": 8,
        "mask": "equispaced",
        "data": "synthetic",
        "seed": 7,
        "scoring": "fastmri",
    }
    assert wandb_settings(cfg) == {
        "name": "edsr-x2-r8-equispaced-s7",
        "group": None,
        "tags": [f"{key}={value}" for key, value in identity.items()],
    }


def test_a_multirun_job_is_grouped_by_its_sweep(job_config):
    cfg = job_config(mode=RunMode.MULTIRUN)
    assert wandb_settings(cfg)["group"] == "grid/2024-01-02_03-04-05_678"


@pytest.mark.parametrize("accel, recorded", [("4.0", 4), ("2.5", 2.5)])
def test_an_integral_acceleration_is_recorded_as_an_int(job_config, accel, recorded):
    cfg = job_config(f"accel={accel}")
    assert run_identity(cfg)["accel"] == recorded and type(run_identity(cfg)["accel"]) is type(
        recorded
    )
    assert wandb_settings(cfg)["name"] == f"cmfnet-x4-r{recorded}-random-s42"
    assert f"accel={recorded}" in wandb_settings(cfg)["tags"]


def test_the_identity_and_the_wandb_tags_name_a_cmfnet_synth_folder_synthetic(job_config, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    cfg = job_config("data=fastmri_knee", f"data.root={root}")
    assert (
        run_identity(cfg)["data"] == "fastmri_knee"
        and "data=fastmri_knee" in wandb_settings(cfg)["tags"]
    )
    (root / SYNTH_RECORD).write_text(json.dumps({"generator": GENERATOR}))
    assert (
        run_identity(cfg)["data"] == "synthetic" and "data=synthetic" in wandb_settings(cfg)["tags"]
    )


def test_a_given_name_group_or_tags_replace_the_derived_ones(job_config):
    cfg = job_config("logger.wandb.name=mine", "logger.wandb.group=g", "logger.wandb.tags=[a]")
    assert wandb_settings(cfg) == {"name": "mine", "group": "g", "tags": ["a"]}


def test_the_startup_timer_times_the_first_training_step(tmp_path):
    timer = StartupTimer()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
        default_root_dir=tmp_path,
    )
    trainer.fit(BoringModel())
    times = startup_times(trainer.callbacks)
    assert set(times) == set(STARTUP_KEYS)
    assert 0 < times["job_start_to_first_step_s"] < times["launch_to_first_step_s"]
    assert timer.startup_times() == times


def test_startup_times_are_none_without_a_training_step_or_a_timer(tmp_path):
    trainer = L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
        callbacks=[StartupTimer()],
        default_root_dir=tmp_path,
    )
    trainer.validate(BoringModel())
    assert startup_times(trainer.callbacks) == dict.fromkeys(STARTUP_KEYS)
    assert startup_times([]) == dict.fromkeys(STARTUP_KEYS)


def test_the_callbacks_group_times_the_startup(job_config):
    cfg = job_config()
    callbacks = [hydra.utils.instantiate(c) for c in cfg.callbacks.values()]
    assert sum(isinstance(c, StartupTimer) for c in callbacks) == 1


def test_the_module_keeps_the_run_config_it_is_given_in_its_checkpoints(job_config):
    """Built as train() builds it: the run config is passed as it is, its _target_ nodes unbuilt."""
    cfg = job_config()
    run_config = {"model": {"_target_": "cmfnet.models.CMFNet", "width": 4}, "seed": 42}
    module = hydra.utils.instantiate(cfg.module, _partial_=True)(
        **injections.module_kwargs(torch.nn.Linear(1, 1), torch.nn.L1Loss(), run_config)
    )
    assert isinstance(module, JointRecSRModule) and module.run_config is run_config
    checkpoint = {}
    module.on_save_checkpoint(checkpoint)
    assert checkpoint["cmfnet_config"] is run_config
