"""fit's progress lines write times as Keras's progress bar does: whole seconds, else
milliseconds, else microseconds, never in scientific notation."""

import re

from nnfun import progress


def test_times_read_as_keras_writes_them():
    # Keras 3's Progbar._format_time: >= 1 s "{:.0f}s", >= 1 ms "{:.0f}ms", else "{:.0f}us".
    assert progress.readable(6.01) == "6s"
    assert progress.readable(6.01 / 13, "step") == "462ms/step"
    assert progress.readable(0.0123, "step") == "12ms/step"
    assert progress.readable(4e-5, "step") == "40us/step"


def test_epoch_lines_carry_epoch_and_step_times(capsys, monkeypatch):
    clock = iter([0.0, 6.01, 6.11])  # started; first chunk (1 epoch); second chunk (2 epochs)
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    bar = progress.Progress(2, epochs=3, initial_epoch=0, steps=13)
    bar.epochs_done([(0, {"loss": 0.5})])
    bar.epochs_done([(1, {"loss": 0.25}), (2, {"loss": 0.125})])
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        "Epoch 1/3 - 6s - 462ms/step - loss: 0.5000",
        "Epoch 2/3 - 50ms - 4ms/step - loss: 0.2500",
        "Epoch 3/3 - 50ms - 4ms/step - loss: 0.1250",
    ]
    assert not any(re.search(r"\de[+-]\d", line) for line in lines)
