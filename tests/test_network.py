"""Sequential: the notes' 2-2-1 network against NumPy, and the manual backward pass against
jax.grad in float64 for depths 1-5 x every hidden activation x output/loss pairing, under
jit and vmap, with every layer kind, penalties, weights and zero initialisation."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import nnfun
from nnfun import activations, gradcheck
from nnfun.layers import BatchNorm, Dense, Dropout, Maxout, PReLU, RReLU

TOL = 1e-9


@pytest.fixture(autouse=True)
def float64():
    with jax.enable_x64(True):
        yield


def sigmoid(u):
    return 1 / (1 + np.exp(-u))


def test_notes_2_2_1_network_against_numpy():
    """The notes' regression network: 2 inputs, 2 sigmoid units, 1 identity output.

    The notes compute u = np.dot(x, w) + b with w of shape (in, out): already nnfun's
    row-major z = x @ W + b, so their weights go in as they are.
    """
    w_im, b_im = np.array([[4.0, 4.0], [4.0, 4.0]]), np.array([3.0, -3.0])
    w_mo, b_mo = np.array([[1.0], [1.0]]), np.array([0.1])
    net = nnfun.Sequential([Dense(2, "sigmoid", input_dim=2), Dense(1)])
    params = net.init(jax.random.key(0), jnp.float64)
    assert [p["W"].shape for p in params] == [(2, 2), (2, 1)]
    params = [
        {"W": jnp.asarray(w_im), "b": jnp.asarray(b_im)},
        {"W": jnp.asarray(w_mo), "b": jnp.asarray(b_mo)},
    ]
    x = np.array([[1.0, 0.5], [0.0, 0.0], [-1.0, 2.0], [-0.75, -0.25], [3.0, -3.0]])
    expected = sigmoid(x @ w_im + b_im) @ w_mo + b_mo  # the notes' forward pass in NumPy
    out = jax.jit(net.apply)(params, jnp.asarray(x))
    assert out.shape == (5, 1) and out.dtype == jnp.float64
    np.testing.assert_allclose(out, expected, rtol=1e-15)
    # By hand for x = (0, 0): sigma(3) + sigma(-3) + 0.1 = 1.1 exactly.
    np.testing.assert_allclose(out[1, 0], 1.1, rtol=1e-15)
    np.testing.assert_allclose(out[0, 0], sigmoid(9.0) + sigmoid(3.0) + 0.1, rtol=1e-15)


# ---- the depth x activation x output/loss matrix ----------------------------------------
# Every named activation ("linear" is identity's alias); custom slopes: test_activations.
HIDDEN = {n: a for n, a in activations.ACTIVATIONS.items() if n != "linear"}
# (output activation, loss, output units): the two fused pairs, then non-fused ones.
OUTPUTS = [
    ("sigmoid", "binary_crossentropy", 3),
    ("softmax", "categorical_crossentropy", 3),
    ("identity", "mse", 3),
    ("sigmoid", "mse", 3),
    ("tanh", "half_squared_error", 3),
]
M, WIDTH = 5, 3  # batch, input and every layer width: few distinct shapes to compile
# (one-unit sigmoid + BCE with integer labels: test_sample_weights and the zero-init test)


def random_params(sizes, seed):
    """W ~ N(0, 1/fan_in) and biases N(0, 0.5^2): biases away from 0 keep exact kinks away."""
    rng = np.random.default_rng(seed)
    return [
        {
            "W": jnp.asarray(rng.normal(size=(i, o)) / np.sqrt(i)),
            "b": jnp.asarray(rng.normal(size=(o,)) * 0.5),
        }
        for i, o in zip(sizes[:-1], sizes[1:], strict=True)
    ]


def targets(loss, units, seed):
    rng = np.random.default_rng(seed)
    if loss == "categorical_crossentropy":
        return jnp.asarray(rng.integers(0, units, M))
    if loss == "binary_crossentropy":
        return jnp.asarray(rng.integers(0, 2, M if units == 1 else (M, units)))
    return jnp.asarray(rng.uniform(-1, 1, (M, units)))


def hidden_stacks(depth, shift):
    """Activation lists for the depth - 1 hidden layers of depth-``depth`` networks such that
    every hidden activation appears (in a rotating position, next to changing neighbours)."""
    names, h = list(HIDDEN), depth - 1
    if h == 0:
        return [[]]
    count = -(-len(names) // h)
    return [[names[(j * h + i + shift) % len(names)] for i in range(h)] for j in range(count)]


def relative_errors(manual, auto):
    """Per leaf max|manual - auto| / max|auto|, in NumPy (no dispatch per leaf); 0 when both
    are exactly zero (a layer behind ReLUs that are dead for the whole batch)."""
    manual, auto = jax.device_get((manual, auto))
    errors = []
    for m, a in zip(jax.tree.leaves(manual), jax.tree.leaves(auto), strict=True):
        diff, scale = np.max(np.abs(m - a)), np.max(np.abs(a))
        errors.append(0.0 if diff == 0 else float(diff / scale))
    return errors


def test_manual_gradients_match_jax_grad_for_every_depth_activation_and_loss():
    """Depths 1-5 x every hidden activation x every output/loss pairing, in float64.

    A depth-d network has d - 1 hidden layers with different activations (a window rotating
    over the list), so every (depth, activation, pairing) is covered by at least one network
    with mixed neighbours: 115 networks. Op by op rather than one jit per network: all of
    them have the same few shapes, so after the first few no operation compiles again.
    """
    x = jnp.asarray(np.random.default_rng(0).normal(size=(M, WIDTH)) * 1.5)
    worst, where, seen, networks = 0.0, None, set(), 0
    for depth in range(1, 6):
        for o, (out_act, loss, k) in enumerate(OUTPUTS):
            for stack in hidden_stacks(depth, shift=5 * o):
                seed = len(seen)
                net = nnfun.Sequential(
                    [*(Dense(WIDTH, HIDDEN[a]) for a in stack), Dense(k, out_act)],
                    input_shape=WIDTH,
                )
                params = random_params([WIDTH] * depth + [k], seed)
                y = targets(loss, k, seed)
                manual = net.manual_grad(params, x, y, loss=loss)
                auto = jax.grad(net.loss)(params, x, y, loss=loss)
                for leaf, err in enumerate(relative_errors(manual, auto)):
                    label = (depth, stack, out_act, loss, f"[{leaf // 2}]['{'Wb'[leaf % 2]}']")
                    assert err < TOL, (label, err)
                    if err > worst:
                        worst, where = err, label
                seen.update((depth, a, out_act, loss) for a in stack or ["-"])
                networks += 1
    expected = {(1, "-", o, loss) for o, loss, _ in OUTPUTS}
    expected |= {(d, a, o, loss) for d in range(2, 6) for a in HIDDEN for o, loss, _ in OUTPUTS}
    assert seen == expected and networks == len(OUTPUTS) * (1 + 10 + 5 + 4 + 3)
    print(f"{networks} networks, {len(expected)} (depth, activation, output, loss) cases;")
    print(f"worst per-leaf relative error {worst:.2e} at {where}")


# ---- jit and vmap, every layer kind, penalties, weights ---------------------------------
def test_manual_grad_under_jit_and_vmap_over_parameter_sets_and_keys():
    net = nnfun.Sequential([Dense(5, "tanh", input_dim=4), Dropout(0.4), Dense(3, "softmax")])
    x = jnp.asarray(np.random.default_rng(1).normal(size=(6, 4)))
    y = jnp.asarray([0, 1, 2, 1, 0, 2])
    sets = [random_params([4, 5, 3], seed) for seed in range(3)]
    for params in sets:  # Dropout has no parameters
        params.insert(1, {})
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *sets)
    keys = jax.random.split(jax.random.key(1), 4)
    kw = {"loss": "categorical_crossentropy", "train": True}

    @jax.jit
    def everything(stacked, keys):
        # vmap over parameter sets (one key) ...
        manual_p = jax.vmap(lambda p: net.manual_grad(p, x, y, key=keys[0], **kw))(stacked)
        grad = jax.grad(lambda p, k: net.loss(p, x, y, key=k, **kw))
        auto_p = jax.vmap(grad, (0, None))(stacked, keys[0])
        # ... and over keys (one parameter set): each key its own dropout mask.
        params = jax.tree.map(lambda a: a[0], stacked)
        manual_k = jax.vmap(lambda k: net.manual_grad(params, x, y, key=k, **kw))(keys)
        auto_k = jax.vmap(grad, (None, 0))(params, keys)
        return (manual_p, auto_p), (manual_k, auto_k)

    (manual_p, auto_p), (manual_k, auto_k) = everything(stacked, keys)
    for manual, auto in ((manual_p, auto_p), (manual_k, auto_k)):
        report = gradcheck.compare(manual, auto, tol=TOL)
        assert report.ok, str(report)
    # Different parameter sets, and different keys, give different gradients.
    assert not np.allclose(manual_p[0]["W"][0], manual_p[0]["W"][1])
    assert not np.allclose(manual_k[0]["W"][0], manual_k[0]["W"][1])


def test_every_layer_kind_in_one_network():
    net = nnfun.Sequential(
        [
            Dense(6, "elu", input_dim=4),
            BatchNorm(momentum=0.8),
            PReLU(),
            Dropout(0.25),
            Maxout(4, pieces=3),
            RReLU(),
            Dense(3, "softmax"),
        ]
    )
    params = net.init(jax.random.key(2), jnp.float64)
    params[2]["slope"] = jnp.asarray(np.random.default_rng(0).uniform(0.1, 0.4, 6))
    x = jnp.asarray(np.random.default_rng(2).normal(size=(8, 4)))
    y = jnp.asarray([0, 1, 2, 0, 1, 2, 0, 1])
    state = net.init_state(jnp.float64)
    kw = {"loss": "categorical_crossentropy", "state": state, "key": jax.random.key(3)}

    @jax.jit  # training mode: batch statistics, dropout mask and RReLU slopes from the key
    def manual_auto_state(params):
        manual = net.manual_grad(params, x, y, train=True, **kw)
        auto = jax.grad(net.loss)(params, x, y, train=True, **kw)
        return manual, auto, net.objective(params, x, y, train=True, **kw)[1].state

    manual, auto, new_state = manual_auto_state(params)
    report = gradcheck.compare(manual, auto, tol=TOL)
    assert report.ok, str(report)
    paths = [leaf.path for leaf in report.leaves]
    assert paths[:3] == ["[0]['W']", "[0]['b']", "[1]['beta']"] and "[2]['slope']" in paths
    # The new BatchNorm statistics are returned; the state passed in is untouched.
    assert not np.allclose(new_state[1]["mean"], 0.0)
    np.testing.assert_array_equal(state[1]["mean"], 0.0)


def test_l1_l2_penalties_reach_weights_not_biases():
    net = nnfun.Sequential(
        [Dense(5, "tanh", input_dim=3), BatchNorm(), Maxout(3), Dense(2, "sigmoid")]
    )
    params = net.init(jax.random.key(4), jnp.float64)
    x = jnp.asarray(np.random.default_rng(4).normal(size=(7, 3)))
    y = jnp.asarray(np.random.default_rng(5).integers(0, 2, (7, 2)), jnp.float64)
    l1, l2 = 0.01, 0.1
    kw = {"loss": "binary_crossentropy", "train": True}

    @jax.jit
    def grads(params):
        plain = net.manual_grad(params, x, y, **kw)
        both = net.manual_grad(params, x, y, l1=l1, l2=l2, **kw)
        auto = jax.grad(net.loss)(params, x, y, l1=l1, l2=l2, **kw)
        return plain, both, auto, net.penalty(params, l1=l1, l2=l2)

    plain, both, auto, penalty = grads(params)
    report = gradcheck.compare(both, auto, tol=TOL)
    assert report.ok, str(report)
    for i, (p, g0, g) in enumerate(zip(params, plain, both, strict=True)):
        for name in p:
            extra = np.asarray(g[name] - g0[name])
            if name == "W":  # Dense and Maxout weights: d/dW (l2/2 W^2 + l1 |W|)
                expected = l2 * np.asarray(p["W"]) + l1 * np.sign(np.asarray(p["W"]))
                np.testing.assert_allclose(extra, expected, rtol=1e-12, err_msg=str(i))
            else:  # biases, gamma, beta
                np.testing.assert_array_equal(extra, 0.0, err_msg=f"{i} {name}")
    weights = [np.asarray(p["W"]) for p in params if "W" in p]
    expected = sum(0.5 * l2 * np.sum(w**2) + l1 * np.sum(np.abs(w)) for w in weights)
    np.testing.assert_allclose(penalty, expected, rtol=1e-14)


def test_sample_weights():
    net = nnfun.Sequential([Dense(4, "softplus", input_dim=3), Dense(1, "sigmoid")])
    params = net.init(jax.random.key(5), jnp.float64)
    x = jnp.asarray(np.random.default_rng(6).normal(size=(6, 3)))
    y = jnp.asarray([0, 1, 1, 0, 1, 0])
    w = jnp.asarray([1.0, 2.0, 0.0, 0.5, 1.0, 1.0])
    keep = np.asarray(w) > 0
    kw = {"loss": "binary_crossentropy"}

    @jax.jit
    def grads(params):
        manual = net.manual_grad(params, x, y, sample_weight=w, **kw)
        auto = jax.grad(net.loss)(params, x, y, sample_weight=w, **kw)
        # Keras's reduction sum(w L) / batch size: a weight-0 row still counts in the batch
        # size, so the gradient is the kept rows' own times n_kept / n; masked out, the row
        # is gone as if never there.
        without = net.manual_grad(params, x[keep], y[keep], sample_weight=w[keep], **kw)
        masked = net.manual_grad(params, x, y, sample_weight=w, mask=keep, **kw)
        return manual, auto, without, masked

    manual, auto, without, masked = grads(params)
    assert gradcheck.compare(manual, auto, tol=TOL).ok
    scaled = jax.tree.map(lambda g: g * keep.sum() / keep.size, without)
    assert gradcheck.compare(manual, scaled, tol=1e-13).ok
    assert gradcheck.compare(masked, without, tol=1e-13).ok


def test_zero_initialisation_autodiff_and_manual_agree_at_exactly_zero():
    """All-zero weights and biases put every pre-activation at exactly 0, where softplus' =
    1/2, ELU' = 1 and the fused output gradient is (1/2 - y)/m; jax.grad must agree there."""
    x = jnp.asarray(np.random.default_rng(7).normal(size=(6, 3)))
    y = jnp.asarray([0, 1, 1, 0, 1, 1])
    hidden = ("softplus", "elu", "tanh", "sigmoid", "swish", "gelu")
    nets = [
        nnfun.Sequential(
            [
                Dense(3, h, input_dim=3, kernel_init="zeros"),
                Dense(1, "sigmoid", kernel_init="zeros"),
            ]
        )
        for h in hidden
    ]
    params = nets[0].init(jax.random.key(0), jnp.float64)
    np.testing.assert_array_equal(jax.flatten_util.ravel_pytree(params)[0], 0.0)

    @jax.jit
    def all_nets(params):
        kw = {"loss": "binary_crossentropy"}
        return [
            (n.manual_grad(params, x, y, **kw), jax.grad(n.loss)(params, x, y, **kw)) for n in nets
        ]

    for name, (manual, auto) in zip(hidden, all_nets(params), strict=True):
        report = gradcheck.compare(manual, auto, tol=TOL)
        assert report.ok, (name, str(report))
        np.testing.assert_allclose(manual[1]["b"], [np.mean(0.5 - np.asarray(y))], rtol=1e-15)
