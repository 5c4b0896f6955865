"""Experiment 19 (convnet) in --quick mode: its conclusion holds and its key numbers are what
convolution's weight sharing predicts."""

from __future__ import annotations

from experiments import convnet


def test_convnet(run_experiment):
    m = run_experiment(convnet, "--seeds", "1")
    dense, conv = m["dense"], m["conv"]
    # By hand: dense 64*32 + 32 + 32*10 + 10; conv 9*8 + 8 + 9*8*16 + 16 + 2*2*16*10 + 10.
    assert (dense["params"], conv["params"]) == (2410, 1898)
    assert conv["accuracy_shift_1"][0] > dense["accuracy_shift_1"][0] + 0.05
    assert m["conv_grad_rel_error"] < 1e-10
