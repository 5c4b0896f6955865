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
    check = re.search(r"manual backprop vs jax.grad: worst relative error (\S+) .*"
                      r"vs finite differences (\S+) \(float64\)", text)  # fmt: skip
    assert check, text
    assert float(check[1]) < 1e-9 and float(check[2]) < 1e-4
    assert "trained 2 epochs in" in text
    scores = {}
    for part in ("train", "test"):
        found = re.search(rf"^{part}\s+accuracy (\d\.\d{{4}})\s+loss (\d+\.\d{{4}})$", text, re.M)
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
