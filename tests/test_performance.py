"""Speed switches keep the numbers and parameter names; the bench command reports ratios."""

import json
import re
import tempfile
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from cmfnet.cli import main
from cmfnet.models import CMFNet
from cmfnet.runs.performance import apply_performance, enable_activation_checkpointing


def _tiny(seed=0):
    torch.manual_seed(seed)
    return CMFNet(scale=2, width=8, unet_width=8, n_branch_steps=2)


def _outputs_and_grads(model):
    torch.manual_seed(1)
    x, aux = torch.randn(2, 1, 12, 12), torch.randn(2, 1, 12, 12)
    rec, sr = model(x, aux)
    (rec.square().mean() + sr.abs().mean()).backward()
    return rec.detach(), sr.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("switch", ["channels_last", "activation_checkpointing"])
def test_switches_keep_outputs_gradients_and_parameter_names(switch):
    reference = _outputs_and_grads(_tiny())
    model = apply_performance(_tiny(), **{switch: True})
    changed = _outputs_and_grads(model)
    assert set(changed[2]) == set(reference[2])  # checkpoints stay interchangeable
    torch.testing.assert_close(changed[0], reference[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(changed[1], reference[1], rtol=1e-4, atol=1e-5)
    for name, grad in reference[2].items():
        torch.testing.assert_close(changed[2][name], grad, rtol=1e-2, atol=1e-4)


def test_activation_checkpointing_wraps_the_unet_blocks_and_stores_fewer_activations():
    model = _tiny()
    assert enable_activation_checkpointing(model, ["UNet"]) == 2  # two RecBlocks
    with pytest.raises(ValueError, match="no submodule of type"):
        enable_activation_checkpointing(_tiny(), ["NoSuchBlock"])

    def saved_bytes(net):
        total = [0]

        def pack(t):
            total[0] += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            rec, sr = net(torch.randn(2, 1, 32, 32), torch.randn(2, 1, 32, 32))
        return total[0]

    assert saved_bytes(model) < 0.7 * saved_bytes(_tiny())


@pytest.mark.slow
def test_bench_prints_ratios_against_eager_and_writes_json(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CMFNET_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "bench.json"
    status = main(
        [
            "bench",
            "experiment=smoke",
            "batch=2",
            "timed_steps=2",
            "warmup_steps=1",
            "options=[channels_last,activation_checkpointing+channels_last,fit_loop,fit_loop_data]",
            "data_samples=4",
            "data_workers=[0,1]",
            "loader_epochs=2",
            "loader_epoch_slices=10",
            "launch=false",
            "targets.data_to_model_ratio=1e12",
            f"json={out}",
        ]
    )
    assert status == 0
    results = json.loads(out.read_text())
    assert results["complete"] is True
    rows = {row["option"]: row for row in results["model_options"]}
    assert list(rows) == [
        "eager_fp32",
        "channels_last",
        "activation_checkpointing+channels_last",
        "fit_loop",
        "fit_loop_data",
    ]
    fastest = max(rows.values(), key=lambda row: row["train_samples_per_s"])  # the loops included
    for loop in (
        "fit_loop",
        "fit_loop_data",
    ):  # the run's own Trainer loop, as run.py resolves it on the CPU
        row = rows.pop(loop)
        assert row["precision"] == "32-true" and row["infer_samples_per_s"] is None
        assert row["train_samples_per_s"] > 0 and "infer_ratio" not in row
        if (
            loop == "fit_loop_data"
        ):  # fed by the run's loader over the smoke data (6 training slices)
            assert row["loader"] == {"workers": 0, "pin_memory": False, "split_slices": 6}
    assert rows["eager_fp32"]["train_ratio"] == 1.0
    for row in rows.values():
        assert row["train_samples_per_s"] > 0 and row["infer_samples_per_s"] > 0
        assert row["train_ratio"] == pytest.approx(
            row["train_samples_per_s"] / rows["eager_fp32"]["train_samples_per_s"]
        )
    data = results["data_path"]
    assert (
        data["warm_samples_per_s"] > 0 and data["train_slices"] == 6 and data["cache_fill_s"] >= 0
    )
    assert data["loader_0_workers_samples_per_s"] > 0 and data["loader_0_workers_first_batch_s"] > 0
    assert data["loader_epoch_slices"] == 10  # the 6-slice split listed again up to 10
    # CPU accounting: the worker's time is counted (it is joined every epoch), and the projection
    # with a free core per process is the slower of the worker and the training process
    assert data["loader_1_workers_worker_cpu_ms_per_sample"] > 0
    own_ms_per_sample = data["loader_1_workers_training_process_cpu_ms_per_batch"] / 2  # batch 2
    assert data["loader_1_workers_projected_samples_per_s"] == pytest.approx(
        1e3 / max(data["loader_1_workers_worker_cpu_ms_per_sample"], own_ms_per_sample)
    )
    assert (
        "loader_0_workers_projected_samples_per_s" not in data
    )  # its CPU time counts intra-op threads
    assert results["data_to_model_ratio_against"] == fastest["option"]
    assert results["data_to_model_ratio"] == pytest.approx(
        data["loader_0_workers_samples_per_s"] / fastest["train_samples_per_s"]
    )
    # targets: only what was measured is judged (no GPU peak here, no launch), against the
    # config's value
    assert results["targets"] == [
        {
            "name": "data_to_model_ratio",
            "value": results["data_to_model_ratio"],
            "compare": ">=",
            "target": 1e12,
            "met": False,
        }
    ]
    printed = capsys.readouterr().out
    assert (
        "eager_fp32" in printed and "target data_to_model_ratio" in printed and "missed" in printed
    )


@pytest.mark.parametrize(
    "override, message",
    [
        ("options=[bf16+turbo]", "options: unknown speed option 'turbo' in 'bf16+turbo'"),
        ("batch=0", "batch must be an integer >= 1, got 0"),
        ("batch=abc", "batch must be an integer >= 1, got 'abc'"),
        ("loader_epoch_slices=0", "loader_epoch_slices must be an integer >= 1, got 0"),
        ("data_workers=[0,-1]", "data_workers must be an integer >= 0, got -1"),
        ("timed_steps=1.5", "timed_steps must be an integer >= 1, got 1.5"),
        ("no_such_key=3", "Could not override 'no_such_key'"),
        ("json={tmp}", "json={tmp}: cannot write a file there ({tmp} is a folder)"),
        ("json={tmp}/bench.json/x.json", "is not a folder"),
    ],
)
def test_bench_refuses_bad_settings_with_one_line_before_measuring(
    override, message, tmp_path, monkeypatch, capsys
):
    import cmfnet.commands.bench.cli as bench

    monkeypatch.setattr(
        bench, "measure_model_isolated", lambda *args: pytest.fail("measured despite a bad setting")
    )
    out = tmp_path / "bench.json"
    override, message = override.format(tmp=tmp_path), message.format(tmp=tmp_path)
    if "bench.json/" in override:
        out.write_text("a file where the bench would need a folder")
    assert (
        main(
            [
                "bench",
                "experiment=smoke",
                override,
                *([] if "json=" in override else [f"json={out}"]),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("cmfnet bench: error:") and message in err and len(err.splitlines()) == 1
    ), err
    assert not out.exists() or "bench.json/" in override


def test_a_bench_stopped_part_way_keeps_what_it_measured(tmp_path, monkeypatch, capsys):
    """A bench killed by a time limit (a lent GPU, a cluster job) must leave the rows measured
    so far."""
    import cmfnet.commands.bench.cli as bench

    def measured(overrides, option):
        return {
            "option": option,
            "train_samples_per_s": 2.0 if option == "bf16" else 1.0,
            "infer_samples_per_s": 4.0,
            "peak_memory_mb": 1.0,
            "warmup_s": 0.1,
        }

    def stopped(cfg, worker_counts):
        raise KeyboardInterrupt

    monkeypatch.setattr(bench, "measure_model_isolated", measured)
    monkeypatch.setattr(bench, "measure_data_path", stopped)
    out = tmp_path / "bench.json"
    with pytest.raises(KeyboardInterrupt):
        main(["bench", "experiment=smoke", "options=[bf16]", "launch=false", f"json={out}"])
    results = json.loads(out.read_text())
    assert results["complete"] is False
    assert [(row["option"], row["train_ratio"]) for row in results["model_options"]] == [
        ("eager_fp32", 1.0),
        ("bf16", 2.0),
    ]
    assert "measured bf16: 2.00 train samples/s (2.00x)" in capsys.readouterr().err


def _tiny_batch():
    """A batch of two 12x12 -> 24x24 samples, as the data module would give it."""
    from cmfnet.data.transforms import JointSample

    return JointSample(
        target_input=torch.randn(2, 1, 12, 12),
        aux_input=torch.randn(2, 1, 12, 12),
        rec_target=torch.randn(2, 1, 12, 12),
        sr_target=torch.randn(2, 1, 24, 24),
        mask=torch.ones(2, 12),
        mean=torch.zeros(2),
        std=torch.ones(2),
        sr_max=torch.zeros(2),
        rec_max=torch.zeros(2),
        fname=["a.h5", "b.h5"],
        slice_idx=[0, 1],
    )


def test_a_training_step_reads_the_device_once_for_its_loss_and_gradient_checks(monkeypatch):
    """Each host read of a GPU value stalls the step: the NaN/inf checks of the loss and of every
    gradient tensor must cost one read per step, after the backward pass, not one per tensor
    or one between the forward and the backward pass."""
    from cmfnet.lit.module import JointRecSRModule
    from cmfnet.mri.losses import JointL1Loss

    model = _tiny()
    module = JointRecSRModule(model, JointL1Loss())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert len(list(model.parameters())) > 50
    batch = _tiny_batch()
    reads = []
    to_bool, to_item, to_list = torch.Tensor.__bool__, torch.Tensor.item, torch.Tensor.tolist
    monkeypatch.setattr(
        torch.Tensor, "__bool__", lambda self: reads.append("bool") or to_bool(self)
    )
    monkeypatch.setattr(torch.Tensor, "item", lambda self: reads.append("item") or to_item(self))
    monkeypatch.setattr(
        torch.Tensor, "tolist", lambda self: reads.append("tolist") or to_list(self)
    )
    loss = module.training_step(batch, 0)
    assert reads == []
    loss.backward()
    module.on_before_optimizer_step(optimizer)
    assert len(reads) == 1
    monkeypatch.undo()
    last = list(model.parameters())[-1]
    last.grad[0] = float("nan")  # still found, and named, when only the last tensor is bad
    name = [n for n, p in model.named_parameters()][-1]
    with pytest.raises(Exception, match=f"non-finite gradient in {name}"):
        module.on_before_optimizer_step(optimizer)


def test_bench_targets_judge_the_best_gpu_row_and_refuse_unknown_names():
    from cmfnet.commands.bench.judge import check_targets

    results = {
        "model_options": [
            {"train_fraction_of_bf16_peak": 0.12},
            {"error": "x"},
            {"train_fraction_of_bf16_peak": 0.31},
        ],
        "data_to_model_ratio": 2.5,
        "launch": {"job_start_to_first_step_s": 6.0},
    }
    checks = {
        c["name"]: c["met"]
        for c in check_targets(
            results,
            {
                "bf16_peak_fraction": 0.3,
                "data_to_model_ratio": 3.0,
                "job_start_to_first_step_s": 5.0,
            },
        )
    }
    assert checks == {
        "bf16_peak_fraction": True,
        "data_to_model_ratio": False,
        "job_start_to_first_step_s": False,
    }
    with pytest.raises(ValueError, match="targets.nope: unknown target"):
        check_targets(results, {"nope": 1.0})


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H200", 989.4e12),
        ("NVIDIA H100 80GB HBM3", 989.4e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A10G", 70e12),
        ("NVIDIA A10", 125e12),
        ("NVIDIA L40", 181e12),
        ("NVIDIA L4", 121e12),
        ("Tesla V100-SXM2-16GB", None),
    ],
)
def test_bf16_peak_is_looked_up_most_specific_name_first(name, peak):
    from cmfnet.commands.bench.model_step import bf16_peak_flops

    assert bf16_peak_flops(name) == peak


@pytest.mark.parametrize("terminal", [True, False])
def test_a_training_run_reads_the_device_once_per_step_apart_from_the_logger(
    monkeypatch, tmp_path, terminal
):
    """Through Lightning's loop with the configured progress bar: one read per step (the checks,
    which also fetch the loss the bar shows), plus the logger's three losses every
    log_every_n_steps. Reads are counted from a step's start to the next one's; the optimizer's
    reads of its step counters are left out, as they stay on the host on a GPU too."""
    import traceback
    from collections import Counter

    import hydra
    import lightning as L
    from hydra import compose, initialize_config_dir
    from lightning.pytorch.callbacks import Callback
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader

    from cmfnet.data.workers import collate_as_is
    from cmfnet.lit.module import JointRecSRModule
    from cmfnet.mri.losses import JointL1Loss

    with initialize_config_dir(
        config_dir=str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"
    ):
        callbacks = compose("train").callbacks
        bar = hydra.utils.instantiate(callbacks.progress_bar, terminal=terminal, plain_interval_s=0)
        estimate = hydra.utils.instantiate(callbacks.run_time_estimate)
    batch = _tiny_batch()
    module = JointRecSRModule(
        _tiny(), JointL1Loss(), optimizer=lambda params: torch.optim.Adam(params, lr=1e-3)
    )
    reads, step = Counter(), [None]

    def counted(name):
        original = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            if (
                step[0] is not None
                and "/torch/optim/" not in traceback.extract_stack(limit=2)[0].filename
            ):
                reads[step[0]] += 1
            return original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, read)

    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        counted(name)

    class StepTracker(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            step[0] = batch_idx

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.loss = outputs["loss"].detach().clone()  # read once training is over

        def on_train_end(self, trainer, pl_module):
            step[0] = None

    tracker = StepTracker()
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=20,
        logger=CSVLogger(tmp_path),
        log_every_n_steps=10,
        enable_checkpointing=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[bar, estimate, tracker],
        default_root_dir=tmp_path,
    )
    trainer.fit(module, DataLoader([batch] * 20, batch_size=None, collate_fn=collate_as_is))
    assert sorted(Counter(reads.values()).items()) == [(1, 18), (4, 2)]
    assert module.last_train_loss == pytest.approx(float(tracker.loss))
    if terminal:
        assert bar.get_metrics(trainer, module)["train/loss"] == module.last_train_loss
    else:  # a plain line every step (interval 0): the bar read nothing more
        assert f"loss {module.last_train_loss:.4g}" in bar.write_line(trainer, module)


class _Item(NamedTuple):
    """A sample with fields of two dtypes (module level: workers pickle it)."""

    image: torch.Tensor
    target: torch.Tensor
    mean: torch.Tensor
    label: torch.Tensor
    name: str


def test_a_worker_batch_crosses_to_the_training_process_as_one_buffer_per_dtype():
    """Each tensor storage sent from a worker costs a shared-memory file and descriptor: the
    collated fields of one dtype must arrive as views of one storage, equal to plain stacking."""
    from torch.utils.data import DataLoader

    from cmfnet.lit.datamodule import collate_samples

    torch.manual_seed(0)
    items = [
        _Item(
            torch.randn(1, 4, 4),
            torch.randn(1, 8, 8),
            torch.randn(()),
            torch.tensor([i, 2 * i]),
            f"f{i}",
        )
        for i in range(6)
    ]
    batches = list(
        DataLoader(items, batch_size=3, num_workers=1, collate_fn=collate_samples, timeout=60)
    )
    for batch, start in zip(batches, (0, 3)):
        for field in ("image", "target", "mean", "label"):
            assert torch.equal(
                getattr(batch, field),
                torch.stack([getattr(i, field) for i in items[start : start + 3]]),
            )
        assert batch.name == [f"f{i}" for i in range(start, start + 3)]
        floats = {
            getattr(batch, field).untyped_storage().data_ptr()
            for field in ("image", "target", "mean")
        }
        assert len(floats) == 1 and batch.image.is_shared()
        assert (
            batch.label.dtype == torch.int64
            and batch.label.untyped_storage().data_ptr() not in floats
        )


def test_bench_help_lists_its_settings_with_defaults_and_its_run_time(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = capsys.readouterr().out
    for setting in (
        "batch: 8",
        "timed_steps: 5",
        "options: [",
        "data_workers: [0, 2]",
        "json: null",
    ):
        assert setting in text, setting
    assert re.search(r"typical run time: about \d+ min", text)


def test_the_datapath_projection_is_the_stated_arithmetic():
    from cmfnet.commands.bench.datapath import per_slice, project

    def one_rank(cpu_s, private_bytes):
        return {"ranks": [{"cpu_s": cpu_s, "private_bytes": private_bytes, "cached_bytes": 512e5}]}

    # one process filling 100 slices: in memory 2 CPU s and 50 MB; shared 2.4 CPU s and 1 MiB
    figures = per_slice({"in_memory": one_rank(2.0, 500e5), "shared": one_rank(2.4, 2**20)}, 100)
    assert figures == pytest.approx(
        {
            "before_fill_cpu_ms_per_slice": 20.0,
            "before_private_bytes_per_slice": 500e3,
            "after_fill_cpu_ms_per_slice": 24.0,
            "after_private_mb": 1.0,
            "cached_bytes_per_slice": 512e3,
        }
    )
    one, eight = project(figures, {"train": 1000}, gpus=[1, 8], gpu_workers=4)
    assert (one["gpus"], eight["gpus"]) == (1, 8)
    # before: every rank fills all 1000 slices with its 4 workers and holds them
    assert one["before_fill_s"] == eight["before_fill_s"] == pytest.approx(1000 * 20 / 4 / 1e3)
    assert eight["before_node_cpu_s"] == pytest.approx(8 * 1000 * 20 / 1e3)
    assert eight["before_gb_per_process"] == pytest.approx(0.5)
    assert eight["before_gb_per_node"] == pytest.approx(8 * 0.5)
    # after: one fill with 4 workers per rank of the node, one copy per node; a process's own
    # memory is the measured constant
    assert one["after_fill_s"] == pytest.approx(1000 * 24 / 4 / 1e3)
    assert eight["after_fill_s"] == pytest.approx(1000 * 24 / 32 / 1e3)
    assert eight["after_node_cpu_s"] == pytest.approx(1000 * 24 / 1e3)
    assert eight["after_private_gb_per_process"] == pytest.approx(2**20 / 1e9)
    assert one["after_gb_per_node"] == eight["after_gb_per_node"] == pytest.approx(0.512)


def test_bench_datapath_scale_refuses_a_scale_that_does_not_divide_the_hr_size(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "datapath_scale=true", "datapath.scales=[3]", f"json={out}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cmfnet bench: error: datapath.kspace [640, 372]: the HR size")
    assert len(err.splitlines()) == 1 and not out.exists()


@pytest.mark.slow  # four rank processes that start torch
def test_bench_datapath_scale_measures_fastmri_layout_files_and_projects_the_splits(
    tmp_path, capsys
):
    out = tmp_path / "bench.json"
    settings = ["datapath.pairs=1", "datapath.slices=3", "datapath.kspace=[32,24]"]
    assert (
        main(["bench", "datapath_scale=true", *settings, "datapath.gpus=[1,8]", f"json={out}"]) == 0
    )
    results = json.loads(out.read_text())
    assert results["complete"] is True and "model_options" not in results
    data = results["datapath_scale"]
    assert data["split_slices_assumed"] == {"train": 227 * 35, "val": 45 * 35}
    for scale, lowres in (("x2", 8), ("x4", 4)):
        measured = data["scales"][scale]
        assert measured["cold_ms_per_slice"] > 0 and measured["read_ms_per_slice"] > 0
        # HR 16x16 float32; LR k-space complex64, rec target and auxiliary float32
        per_slice = 16 * 16 * 4 + lowres * lowres * (8 + 4 + 4)
        assert measured["per_slice"]["cached_bytes_per_slice"] == per_slice
        assert measured["files_bytes_per_slice"] > per_slice  # with the .npy headers
        for name, ranks in (("one_process", 1), ("two_ranks", 2)):
            before, after = measured[name]["in_memory"], measured[name]["shared"]
            assert [rank["filled"] for rank in before["ranks"]] == [3] * ranks
            assert [rank["filled"] for rank in after["ranks"]] == [0] * (ranks - 1) + [3]
            assert (before["fill_workers"], after["fill_workers"]) == (2, 2 * ranks)
            assert all(rank["cached_bytes"] == 3 * per_slice for rank in after["ranks"])
        assert [(row["split"], row["gpus"]) for row in measured["projection"]] == [
            ("train", 1),
            ("train", 8),
            ("val", 1),
            ("val", 8),
        ]
    printed = capsys.readouterr().out
    assert "data path at the real split sizes" in printed and "projected per node" in printed
    assert not list(Path(tempfile.gettempdir()).glob("cmfnet-bench-datapath-*"))
