"""A checkpoint with a leaf more or a leaf fewer than ``like`` names the missing side as "no
leaf" (a sampled mutant of nnfun.checkpoint that reworded it survived)."""

import numpy as np
import pytest

from nnfun import checkpoint


def test_a_missing_or_an_extra_leaf_is_named_no_leaf(tmp_path):
    one = {"x": np.zeros(3, np.float32)}
    two = {"x": np.zeros(3, np.float32), "y": np.zeros(2, np.float32)}
    checkpoint.save(tmp_path / "one", 0, one)
    checkpoint.save(tmp_path / "two", 0, two)
    with pytest.raises(
        ValueError, match=r"leaf \['y'\]: expected \['y'\] float32\[2\], got no leaf"
    ):
        checkpoint.restore(tmp_path / "one", two)
    with pytest.raises(
        ValueError, match=r"leaf \['y'\]: expected no leaf, got \['y'\] float32\[2\]"
    ):
        checkpoint.restore(tmp_path / "two", one)
