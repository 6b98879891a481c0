"""The name map of the earlier layout (cmfnet.runs.renames): every old path it knows leads to
something that imports today, and a run config of the earlier layout builds."""

from __future__ import annotations

import importlib

import hydra.utils
import pytest

from cmfnet.runs.renames import MOVED_MODULES, MOVED_NAMES, current_target, current_targets


def imported(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_every_moved_module_leads_to_one_that_imports(old):
    importlib.import_module(MOVED_MODULES[old])
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(old)


@pytest.mark.parametrize(
    "old, new, name",
    [
        (old, new, name)
        for old, moved in sorted(MOVED_NAMES.items())
        for new, names in moved.items()
        for name in names
    ],
)
def test_every_moved_name_is_where_the_map_says(old, new, name):
    assert current_target(f"{old}.{name}") == f"{new}.{name}"
    assert imported(f"{new}.{name}") is not None


def test_paths_of_todays_layout_and_foreign_ones_are_left_as_they_are():
    for path in ("cmfnet.mri.masks.RandomMaskFunc", "cmfnet.models.CMFNet", "os.system"):
        assert current_target(path) == path


def test_a_config_of_the_earlier_layout_builds_todays_objects():
    """The ``_target_`` paths conf/ held before the layout changed, nested as configs nest."""
    config = {
        "loss": {"_target_": "cmfnet.losses.JointL1Loss", "w_rec": 0.5, "w_sr": 0.5},
        "callbacks": [{"_target_": "cmfnet.sweep.ResultsTableCallback"}],
        "mask": {
            "_target_": "cmfnet.masks.EquispacedMaskFunc",
            "center_fractions": [0.08],
            "accelerations": [4],
        },
        "precision": {"_target_": "cmfnet.config.fastest_precision"},
    }
    built = hydra.utils.instantiate(current_targets(config))
    assert type(built.loss) is imported("cmfnet.mri.losses.JointL1Loss")
    assert type(built.callbacks[0]) is imported("cmfnet.sweeps.callback.ResultsTableCallback")
    assert type(built.mask) is imported("cmfnet.mri.masks.EquispacedMaskFunc")
    assert built.precision in ("bf16-mixed", "32-true")
