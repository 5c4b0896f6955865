"""The basics experiments in --quick mode: each runs in-process and its numbers hold."""

from __future__ import annotations

import math

from experiments import activation_gallery, computational_graph, linear_collapse, xor


def test_activation_gallery(tmp_path, run_experiment):
    m = run_experiment(activation_gallery)
    assert m["sigmoid_derivative_max"] == 0.25
    assert m["sigmoid_derivative_argmax_z"] == 0.0
    assert m["sigmoid_at_0"] == 0.5
    assert m["tanh_derivative_max"] == 1.0
    assert m["tanh_vs_2sigmoid2z_minus_1"] <= 1e-6
    assert m["softmax_z0_vs_sigmoid"] <= 1e-6
    names = {"identity", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus", "swish"}
    assert names <= set(m["grad_rel_error"])
    assert all(e <= 1e-10 for e in m["grad_rel_error"].values()), m["grad_rel_error"]
    assert m["softmax_vjp_rel_error"] <= 1e-10
    assert all(e <= 1e-6 for e in m["layer_backward_vs_jax_grad"].values())
    assert m["relu_derivative_values"] == [0.0, 1.0]
    assert m["derivative_at_0"]["relu"] == {
        "library": 0.0, "jax_grad_of_library_fn": 0.0, "jax_nn": 0.0
    }  # fmt: skip
    assert math.isclose(m["derivative_at_0"]["leaky_relu"]["library"], 0.01, rel_tol=1e-6)
    assert (tmp_path / "activation_gallery" / "activations.png").is_file()


def test_computational_graph(tmp_path, run_experiment):
    m = run_experiment(computational_graph)
    assert m["forward"] == {"u": 6.0, "v": 11.0, "J": 33.0}
    expected = {"a": 3.0, "b": 6.0, "c": 9.0}
    for name, value in expected.items():
        assert m["manual"][name] == value
        assert m["jax_grad"][name] == value
        assert abs(m["one_sided_fd_float64"][name] - value) <= 1e-3
        assert abs(m["central_fd_float64"][name] - value) <= 1e-3
    assert m["manual"]["u"] == m["manual"]["v"] == 3.0
    assert m["h"] == 0.001
    assert m["one_sided_fd_float32_max_error"] > 1e-4  # why the differences run in float64
    assert (tmp_path / "computational_graph" / "graph.png").is_file()


def test_linear_collapse(tmp_path, run_experiment):
    m = run_experiment(linear_collapse, "--seeds", "4")
    assert m["composition"]["float32"]["relative_error"] <= 1e-6
    assert m["composition"]["float64"]["relative_error"] <= 1e-12
    assert m["trained_deep_linear_vs_collapsed_unit"] <= 1e-5
    deep = m["deep linear (5 layers)"]  # --quick leaves logistic regression to test_xor
    assert deep["max_accuracy"] <= 0.75
    assert deep["min_loss"] >= math.log(2) - 1e-5
    assert deep["max_loss"] < math.log(2) + 1e-3  # at the best a linear model can do
    tanh = m["8 tanh hidden"]
    assert tanh["seeds_at_100"] == 4
    assert tanh["max_loss"] < 0.2
    assert (tmp_path / "linear_collapse" / "decision_boundaries.png").is_file()


def test_xor(tmp_path, run_experiment):
    m = run_experiment(xor, "--seeds", "4")
    lr = m["logistic regression"]
    assert lr["max_accuracy"] <= 0.75
    assert lr["min_loss"] >= math.log(2) - 1e-5
    assert lr["max_abs_output_minus_half"] < 0.05
    assert m["8 tanh hidden"]["seeds_at_100"] == 4
    assert max(m["8 tanh hidden"]["loss"]) < 0.1
    notes = m["notes_2_2_1_outputs"]
    assert notes[0] < notes[1] == notes[2] < notes[3]  # grows with x0 + x1: not XOR
    assert math.isclose(notes[0], 1.1, rel_tol=1e-6)  # sigmoid(3) + sigmoid(-3) + 0.1
    hand = m["hand_set_xor_outputs"]
    assert all(abs(a - t) < 1e-3 for a, t in zip(hand, [0, 1, 1, 0], strict=True))
    assert (tmp_path / "xor" / "decision_boundaries.png").is_file()
