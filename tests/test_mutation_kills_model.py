"""Sizes of 1024 GB and more stay in GB, as Keras's summary writes them (a sampled mutant of
nnfun.model that let them divide once more survived)."""

from nnfun.model import _readable


def test_sizes_by_hand_in_powers_of_1024_up_to_gb():
    assert _readable(1000) == "1000.00 B"
    assert _readable(9636) == "9.41 KB"
    assert _readable(3 * 1024**3) == "3.00 GB"
    assert _readable(2048 * 1024**3) == "2048.00 GB"
