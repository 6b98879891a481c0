"""``import cmfnet`` alone: it registers the configs' resolvers and stays light."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

NOTEBOOK = f"""
import sys

import cmfnet

heavy = sorted({{"torch", "lightning", "numpy"}} & set(sys.modules))
assert not heavy, f"import cmfnet imported {{heavy}}"

import hydra.utils
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

with initialize_config_dir(config_dir={str(CONF_DIR)!r}, version_base="1.3"):
    cfg = compose(config_name="train")
OmegaConf.to_container(cfg.model, resolve=True)  # before anything imports a cmfnet module
model = hydra.utils.instantiate(cfg.model)
print(type(model).__name__, sum(p.numel() for p in model.parameters()))
"""


@pytest.mark.slow
def test_import_cmfnet_alone_lets_a_notebook_compose_and_build_the_model():
    """In a fresh process, as in a notebook: nothing imported but cmfnet, Hydra's compose API
    and ``hydra.utils.instantiate`` (the model config holds ``${scaled_width:64}``)."""
    done = subprocess.run(
        [sys.executable, "-c", NOTEBOOK], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    name, params = done.stdout.split()
    assert name == "CMFNet" and int(params) > 0
