"""What fit shows, checked directly (sampled mutants of nnfun.progress survived the fit tests):
Keras's time units, the per-epoch line's separators, the bar advancing by a chunk's epochs."""

import re

from nnfun.progress import Progress, readable


def test_readable_times_by_hand():
    assert readable(1.0) == "1s"
    assert readable(0.012) == "12ms"
    assert readable(4e-5) == "40us"
    assert readable(8e-4, "step") == "800us/step"


def test_one_line_per_epoch_as_keras_writes_it(capsys):
    Progress(2, epochs=3, initial_epoch=0).epochs_done([(0, {"loss": 0.5, "accuracy": 0.25})])
    line = capsys.readouterr().out.strip()
    assert re.fullmatch(r"Epoch 1/3 - \d+(s|ms|us) - loss: 0\.5000 - accuracy: 0\.2500", line), line


def test_the_bar_advances_by_the_chunks_epochs():
    progress = Progress(1, epochs=5, initial_epoch=1)
    progress.epochs_done([(1, {"loss": 1.0}), (2, {"loss": 0.5})])
    assert progress.bar.n == 3
    progress.close()
