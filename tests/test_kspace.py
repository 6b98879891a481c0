import numpy as np
import pytest
import torch

fastmri = pytest.importorskip("fastmri")
from fastmri.data import transforms as fmt  # noqa: E402

from cmfnet.mri.kspace import center_crop, complex_abs, fft2c, ifft2c  # noqa: E402


@pytest.mark.parametrize("shape", [(4, 6), (5, 7), (3, 16, 9)])
def test_fft2c_matches_fastmri_for_even_and_odd_sizes(shape):
    rng = np.random.default_rng(0)
    data = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(np.complex64)
    ref = fastmri.fft2c(torch.view_as_real(torch.from_numpy(data)))
    np.testing.assert_allclose(fft2c(data), torch.view_as_complex(ref).numpy(), atol=1e-5)
    ref_inv = fastmri.ifft2c(torch.view_as_real(torch.from_numpy(data)))
    np.testing.assert_allclose(ifft2c(data), torch.view_as_complex(ref_inv).numpy(), atol=1e-5)
    np.testing.assert_allclose(ifft2c(torch.from_numpy(data)).numpy(), ifft2c(data), atol=1e-5)


def test_fft2c_is_orthonormal_and_inverted_by_ifft2c():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((9, 12)) + 1j * rng.standard_normal((9, 12))
    k = fft2c(x)
    assert np.isclose(np.linalg.norm(k), np.linalg.norm(x))
    np.testing.assert_allclose(ifft2c(k), x, atol=1e-12)
    # the DC term sits at the centre (n // 2) of centred k-space
    assert np.argmax(np.abs(fft2c(np.ones((9, 12))))) == np.ravel_multi_index((4, 6), (9, 12))


@pytest.mark.parametrize("crop", [(3, 3), (4, 5), (7, 2)])
def test_center_crop_matches_fastmri(crop):
    data = torch.arange(9 * 8, dtype=torch.float32).reshape(9, 8)
    np.testing.assert_array_equal(
        center_crop(data.numpy(), crop), fmt.center_crop(data, crop).numpy()
    )


def test_center_crop_rejects_a_crop_larger_than_the_data():
    with pytest.raises(ValueError, match="cannot centre-crop"):
        center_crop(np.zeros((4, 4)), (5, 4))


def test_complex_abs():
    assert complex_abs(np.array([3 + 4j]))[0] == 5
    assert complex_abs(torch.tensor([3 + 4j]))[0].item() == 5
