import numpy as np
import pytest

from tiltstream.recon.binning import bin_factor, binned_geometry, block_mean, centre_shift_px


def test_block_mean_averages_blocks_of_every_axis():
    v = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)
    d = block_mean(v, 2)
    assert d.shape == (2, 3, 4) and d.dtype == np.float32
    assert d[1, 2, 3] == pytest.approx(v[2:4, 4:6, 6:8].mean())
    np.testing.assert_array_equal(block_mean(v, 1), v)


def test_odd_edges_are_completed_with_the_edge_sample_not_cropped(rng):
    frames = rng.random((3, 7, 5), dtype=np.float32)  # a stack of odd, non-square frames
    b = block_mean(frames, 3, ndim=2)
    assert b.shape == (3, 3, 2)  # ceil(7/3), ceil(5/3); the stack axis untouched
    # the last column block holds columns 3, 4 and a copy of column 4
    expect = np.concatenate([frames[1, 6:7, 3:5], frames[1, 6:7, 4:5]], axis=1)
    expect = np.concatenate([expect, expect, expect], axis=0)  # rows 6, 6, 6 (row 6 twice copied)
    assert b[1, 2, 1] == pytest.approx(expect.mean())
    assert block_mean(frames, 3).shape == (1, 3, 2)  # all axes binned without ndim


def test_factor_and_centre_shift():
    assert bin_factor((37, 31), None) == 1
    assert bin_factor((37, 31), 64) == 1 and bin_factor((130, 64), 64) == 3
    assert centre_shift_px(31, 2) == 0.5 and centre_shift_px(32, 2) == 0.0 and centre_shift_px(31, 4) == 0.5
    with pytest.raises(ValueError, match="factor: expected a positive integer, got 1.5"):
        block_mean(np.zeros((4, 4)), 1.5)
    with pytest.raises(ValueError, match="max_edge: expected ≥ 1, got 0"):
        bin_factor((4, 4), 0)


@pytest.mark.parametrize(("nu", "factor", "offset"), [(33, 2, 0.0), (33, 4, 1.5), (64, 4, -3.0), (7, 3, 0.25)])
def test_binned_geometry_keeps_the_tilt_axis_where_it_is(nu, factor, offset):
    (ny, nb), binned_offset = binned_geometry((10, nu), factor, offset)
    assert (ny, nb) == (-(-10 // factor), -(-nu // factor))
    full_axis = (nu - 1) / 2 + offset
    # binned pixel k averages full pixels k·f ... k·f + f - 1: its centre is at k·f + (f - 1)/2
    assert ((nb - 1) / 2 + binned_offset) * factor + (factor - 1) / 2 == pytest.approx(full_axis)
