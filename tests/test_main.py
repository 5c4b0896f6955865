"""The README's main command, ``python -m nnfun``, run as a user runs it: in a fresh process,
from outside the repository, with a small epoch count."""

import math
import os
import re
import subprocess
import sys


def test_python_m_nnfun_checks_trains_reports_and_plots(tmp_path):
    out = tmp_path / "plots"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "nnfun", "--epochs", "2", "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert "digits: 1437 train / 360 test, 64 features, 10 classes" in text
    check = re.search(r"manual backprop vs jax.grad: worst relative error (\S+) .*288010 "
                      r"elements\); vs finite differences (\S+) \((\d+) sampled elements\); "
                      r"float64, [\d.]+ s \([\d.]+ s CPU\)", text)  # fmt: skip
    assert check, text
    assert float(check[1]) < 1e-9 and float(check[2]) < 1e-4
    assert 24 <= int(check[3]) <= 100  # a sample: at least 4 of each of the 6 leaves
    # Each stage says what it starts before it runs.
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(("checking", "training"))]
    ends = [i for i, line in enumerate(lines) if line.startswith(("manual backprop", "trained"))]
    assert len(starts) == len(ends) == 2 and starts[0] < ends[0] < starts[1] < ends[1], text
    assert re.search(r"^trained 2 epochs in [\d.]+ s \([\d.]+ s CPU\)", text, re.M), text
    # The last epoch's accuracy and "train accuracy" are on the same rows: those trained on.
    assert "training 2 epochs on 1293 rows (144 held out for validation)" in text
    scores = {}
    for part, rows in (("train", "1293 rows trained on"), ("test", "360 test rows")):
        found = re.search(rf"^{part}\s+accuracy (\d\.\d{{4}})\s+loss (\d+\.\d{{4}})  \({rows}\)$",
                          text, re.M)  # fmt: skip
        assert found, f"no {part} accuracy line in:\n{text}"
        scores[part] = float(found[1]), float(found[2])
    # Ten classes: a uniform guess has cross-entropy ln 10; two epochs (26 Adam steps) of
    # the sigmoid network already do better, on the held-out digits too.
    assert scores["train"][1] < math.log(10) and scores["test"][1] < math.log(10), scores
    assert 0 <= scores["test"][0] <= 1
    for name in ("history.png", "misclassified.png"):
        png = out / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, name
    assert f"plots: {out / 'history.png'}, {out / 'misclassified.png'}" in text
    assert re.search(r"^done in [\d.]+ s \([\d.]+ s CPU\)", text, re.M), text
