"""A run's record by hand (sampled mutants of nnfun.run_record survived the fit tests): no last
epoch before one has run, and the monitor's "no best yet" (-1) is not taken as a best."""

from nnfun.run_record import RunRecord


def test_last_epoch_is_none_until_an_epoch_has_run():
    record = RunRecord(initial_epoch=3, epochs=6)
    assert record.last_epoch is None
    record.advance(2)  # epochs 3 and 4
    assert record.last_epoch == 4


def test_no_best_yet_is_not_a_best():
    record = RunRecord(initial_epoch=0, epochs=4)
    record.best(-1, float("inf"))
    assert record.best_epoch is None and record.best_value is None
    record.best(2, 0.5)
    assert (record.best_epoch, record.best_value) == (2, 0.5)
