import numpy as np
import pytest
import torch

from cmfnet.data.transforms import JointRecSRTransform
from cmfnet.mri.degrade import degrade_slice, lowres_kspace, lowres_shape, undersample
from cmfnet.mri.kspace import center_crop, fft2c, ifft2c
from cmfnet.mri.masks import RandomMaskFunc


def _image(size=32, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((size, size)) + 1j * rng.random((size, size))).astype(np.complex64)


@pytest.mark.parametrize("scale", [2, 4])
def test_degradation_shapes_and_definitions(scale):
    target, aux = _image(32, 0), _image(32, 1)
    pair = degrade_slice(target, aux, scale)
    h = 32 // scale
    assert pair.target_kspace_lr.shape == (h, h) and pair.target_kspace_lr.dtype == np.complex64
    assert pair.rec_target.shape == pair.aux_lr.shape == (h, h)
    assert pair.target_hr.shape == (32, 32)
    expected_k = center_crop(fft2c(target), (h, h)) / scale
    np.testing.assert_allclose(pair.target_kspace_lr, expected_k, atol=1e-5)
    np.testing.assert_allclose(pair.rec_target, np.abs(ifft2c(expected_k)), atol=1e-5)
    np.testing.assert_allclose(
        pair.aux_lr, np.abs(ifft2c(center_crop(fft2c(aux), (h, h)) / scale)), atol=1e-5
    )
    np.testing.assert_allclose(pair.target_hr, np.abs(target), atol=1e-6)


@pytest.mark.parametrize("scale", [2, 4])
def test_lowres_images_keep_the_hr_intensity_scale(scale):
    # a constant image stays the same constant at LR: the documented compensation by 1/scale
    constant = np.full((16, 16), 3.0 + 0j, dtype=np.complex64)
    np.testing.assert_allclose(np.abs(ifft2c(lowres_kspace(constant, scale))), 3.0, rtol=1e-5)


def test_scale_must_divide_the_hr_size():
    with pytest.raises(ValueError, match="scale=3 does not divide the HR size 32x32"):
        lowres_shape((32, 32), 3)


def test_undersample_applies_the_column_mask():
    k = fft2c(_image(8))
    mask = np.zeros(8, dtype=np.float32)
    mask[3:5] = 1
    expected = np.abs(ifft2c(k * mask[None, :]))
    np.testing.assert_allclose(undersample(k, mask), expected, atol=1e-6)
    with pytest.raises(ValueError, match="mask has shape"):
        undersample(k, np.ones(7, dtype=np.float32))


def test_transform_normalises_with_input_statistics_and_seeds_eval_masks_by_name():
    pair = degrade_slice(_image(32, 0), _image(32, 1), 4)
    val = JointRecSRTransform(RandomMaskFunc([0.08], [4], seed=0), seed_masks_by_name=True, clamp=6)
    a = val(pair, "file_a.h5", 0)
    b = val(pair, "file_a.h5", 1)
    c = JointRecSRTransform(RandomMaskFunc([0.08], [4], seed=99), seed_masks_by_name=True)(
        pair, "file_a.h5", 0
    )
    assert torch.equal(a.mask, b.mask) and torch.equal(a.mask, c.mask)  # seeded by the name only
    assert a.target_input.shape == (1, 8, 8) and a.sr_target.shape == (1, 32, 32)
    zero_filled = undersample(pair.target_kspace_lr, a.mask.numpy())
    assert float(a.mean) == pytest.approx(zero_filled.mean(), rel=1e-5)
    # de-normalising the targets gives back the untouched targets
    np.testing.assert_allclose(
        (a.sr_target[0] * a.std + a.mean).numpy(), pair.target_hr, rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        (a.rec_target[0] * a.std + a.mean).numpy(), pair.rec_target, rtol=1e-4, atol=1e-5
    )
    assert a.target_input.abs().max() <= 6 and a.aux_input.abs().max() <= 6


def test_training_masks_are_fresh_per_sample_and_reproducible_per_stream():
    pair = degrade_slice(_image(64, 0), _image(64, 1), 2)
    train = JointRecSRTransform(RandomMaskFunc([0.08], [4], seed=0), seed_masks_by_name=False)
    train.set_stream(seed=1, epoch=0, worker=0)
    first = [train(pair, "f.h5", 0).mask for _ in range(4)]
    assert any(not torch.equal(first[0], m) for m in first[1:])
    train.set_stream(seed=1, epoch=0, worker=0)
    assert all(torch.equal(m, train(pair, "f.h5", 0).mask) for m in first)


def test_instance_normalisation_equals_fastmri():
    from fastmri.data.transforms import normalize_instance as fastmri_normalize_instance

    from cmfnet.data.transforms import normalize_instance

    image = np.random.default_rng(3).random((20, 24)).astype(np.float32)
    ours, mean, std = normalize_instance(image, eps=1e-11)
    reference, ref_mean, ref_std = fastmri_normalize_instance(torch.from_numpy(image), eps=1e-11)
    assert (mean, std) == pytest.approx((float(ref_mean), float(ref_std)), rel=1e-6)
    np.testing.assert_allclose(ours, reference.numpy(), rtol=1e-5, atol=1e-6)


def test_the_training_loader_drops_only_a_trailing_batch_of_one(fastmri_pairs):
    import functools

    from cmfnet.data.fastmri import FastMRIPairDataset
    from cmfnet.lit.datamodule import JointDataModule
    from cmfnet.mri.masks import RandomMaskFunc

    split = functools.partial(
        FastMRIPairDataset,
        root=fastmri_pairs / "singlecoil_val",
        pairs_csv=fastmri_pairs / "pairs.csv",
    )
    sizes = {}
    for batch_size in (2, 3, 4):  # 7 training slices: 1, 1 and 3 left over
        datamodule = JointDataModule(
            root=str(fastmri_pairs),
            splits={"train": split},
            mask_func=RandomMaskFunc([0.08], [4]),
            scale=2,
            batch_size=batch_size,
            fill_cache=False,
        )
        datamodule.setup("fit")
        sizes[batch_size] = [batch.target_input.shape[0] for batch in datamodule.train_dataloader()]
    assert sizes == {2: [2, 2, 2], 3: [3, 3], 4: [4, 3]}
