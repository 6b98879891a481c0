"""`cmfnet.runs.errors.one_line`: every failure cmfnet reports is one line that says what and
where."""

from __future__ import annotations

import hydra.utils
import pytest
from omegaconf import OmegaConf

from cmfnet.runs.checkpoint import CheckpointError, load_checkpoint
from cmfnet.runs.errors import DataError, one_line


class LibraryError(Exception):
    """Stands for a library's own exception type (neither built-in nor cmfnet's)."""


def raised(action) -> BaseException:
    """The exception ``action()`` raises."""
    with pytest.raises(BaseException) as info:
        action()
    return info.value


def test_a_plain_message_is_its_first_line():
    assert one_line(ValueError("x.h5: bad\nmore detail")) == "x.h5: bad"
    assert one_line(FileNotFoundError("\n  nope.csv: not found  \n")) == "nope.csv: not found"


def test_a_library_error_of_another_type_is_named_by_it_and_an_empty_one_by_its_type_alone():
    assert one_line(KeyError("kspace")) == "KeyError: 'kspace'"
    assert one_line(RuntimeError()) == "RuntimeError"


def test_the_data_error_in_the_chain_names_the_file():
    def wrapped():
        try:
            raise DataError("f.h5: slice 1 k-space contains NaN or inf")
        except DataError as err:
            raise LibraryError("an error occurred in a worker") from err

    assert one_line(raised(wrapped)) == "f.h5: slice 1 k-space contains NaN or inf"


def test_cmfnets_own_message_wins_over_the_library_error_it_wraps(tmp_path):
    text = tmp_path / "notes.ckpt"
    text.write_text("epoch,loss\n")
    err = raised(lambda: load_checkpoint(text))
    assert isinstance(err, CheckpointError) and err.__cause__ is not None
    assert one_line(err) == str(err) and one_line(err).startswith(
        f"{text}: not a readable torch checkpoint"
    )


def test_a_wrapper_that_only_quotes_its_cause_gives_the_cause():
    """Hydra's `Error in call to target ...` says nothing its cause does not."""
    library = raised(
        lambda: hydra.utils.instantiate({"_target_": "fractions.Fraction", "numerator": "x"})
    )
    assert one_line(library) == "Invalid literal for Fraction: 'x'"
    ours = raised(
        lambda: hydra.utils.instantiate(
            {
                "_target_": "cmfnet.mri.masks.RandomMaskFunc",
                "center_fractions": [0.08],
                "accelerations": [1],
            }
        )
    )
    assert one_line(ours) == "mask: acceleration must be > 1, got 1"


def test_a_wrapper_that_says_more_than_its_cause_is_kept():
    def wrapped():
        try:
            raise LibraryError("Key 'x' is not in struct")
        except LibraryError as err:
            raise LibraryError(
                "Could not override 'x'.\nTo append to your config use +x=1"
            ) from err

    assert one_line(raised(wrapped)) == "LibraryError: Could not override 'x'."


def test_a_context_suppressed_with_from_none_is_not_reported():
    def reraised():
        try:
            raise DataError("pairs.csv: pairing CSV not found")
        except DataError as err:
            raise ValueError(f"{err} (no --csv given; pass one)") from None

    assert (
        one_line(raised(reraised)) == "pairs.csv: pairing CSV not found (no --csv given; pass one)"
    )


def test_a_config_error_is_prefixed_by_its_key():
    cfg = OmegaConf.create({"data": {"root": "x"}})
    OmegaConf.set_struct(cfg, True)
    assert one_line(raised(lambda: cfg.data.rot)) == "data.rot: Key 'rot' is not in struct"


def test_a_dataloader_workers_re_raise_reads_as_the_original():
    message = (
        "Caught DataError in DataLoader worker process 0.\n"
        "Original Traceback (most recent call last):\n"
        '  File "fastmri.py", line 1, in read_slice\n'
        "cmfnet.runs.errors.DataError: f.h5: slice 1 k-space contains NaN or inf\n"
    )
    assert one_line(DataError(message)) == "f.h5: slice 1 k-space contains NaN or inf"
    assert one_line(DataError("Caught nothing\nsecond line")) == "Caught nothing"
