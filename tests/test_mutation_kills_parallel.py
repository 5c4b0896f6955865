"""parallel.save_checkpoint on one process writes where it is told, and restore_checkpoint reads
it back (a sampled mutant of nnfun.parallel that dropped the directory survived the tests of
tests/test_parallel.py; only the slow multi-process tests reached it)."""

import numpy as np

from nnfun import checkpoint, parallel


def test_save_checkpoint_writes_the_step_in_the_directory_and_reads_back(tmp_path):
    tree = {"w": np.arange(3.0, dtype=np.float32)}
    parallel.save_checkpoint(tmp_path, 7, tree, metadata={"note": "x"})
    assert checkpoint.all_steps(tmp_path) == [7]
    back, metadata = parallel.restore_checkpoint(tmp_path, tree)
    np.testing.assert_array_equal(back["w"], tree["w"])
    assert metadata == {"note": "x"}
