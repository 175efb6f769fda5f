"""Tests for diagnostics.py: every metric on inputs whose answer is known by construction."""

import csv
import importlib
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

torch.set_num_threads(1)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import diagnostics as D  # noqa: E402


def matrix_with_singular_values(s, n, seed=0):
    """U diag(s) V^T with random orthonormal U (n x d) and orthogonal V (d x d)."""
    rng = np.random.default_rng(seed)
    d = len(s)
    u, _ = np.linalg.qr(rng.standard_normal((n, d)))
    v, _ = np.linalg.qr(rng.standard_normal((d, d)))
    return u @ np.diag(s) @ v.T


# ---------------------------------------------------------------------------------------------
# Rank
# ---------------------------------------------------------------------------------------------
def test_srank_of_chosen_singular_values():
    s = np.array([10, 5, 2, 1, 0.5, 0.25, 0.1, 0.05])
    # cumulative / total (total 18.9): .529 .794 .899 .952 .979 .992 .997 1
    x = matrix_with_singular_values(s, n=20)
    sv = D.singular_values(x)
    np.testing.assert_allclose(sv, s, rtol=1e-9)
    assert D.srank(sv, delta=0.01) == 6
    assert D.srank(sv, delta=0.03) == 5
    assert D.srank(sv, delta=0.05) == 4
    assert D.srank(sv, delta=0.25) == 2
    assert D.srank(sv, delta=0.5) == 1  # k counts from 1: the first value alone holds half
    # exactly at the boundary, sum_{i<=k} / sum == 1 - delta, k counts
    assert D.srank(D.singular_values(np.eye(4)), delta=0.25) == 3
    assert D.srank(D.singular_values(np.eye(4)), delta=0.5) == 2


def test_rank_of_a_rank_deficient_matrix():
    s = np.array([3.0, 2.0, 1.0, 0.0, 0.0])
    sv = D.singular_values(matrix_with_singular_values(s, n=12, seed=1))
    assert np.all(sv[3:] == 0)  # rounding noise below the Gram matrix's precision becomes 0
    assert D.srank(sv) == 3
    p = np.array([3, 2, 1]) / 6
    assert D.effective_rank(sv) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-9)


def test_effective_rank_is_the_exponential_of_the_entropy():
    assert D.effective_rank(D.singular_values(np.eye(16))) == pytest.approx(16.0, rel=1e-12)
    rng = np.random.default_rng(2)
    rank_one = D.singular_values(np.outer(rng.standard_normal(40), rng.standard_normal(8)))
    assert D.effective_rank(rank_one) == pytest.approx(1.0, abs=1e-12)
    assert D.srank(rank_one) == 1
    assert D.effective_rank(np.array([1.0, 1.0, 0.0, 0.0])) == pytest.approx(2.0)
    # p = (0.5, 0.25, 0.25): entropy 1.5 log 2, effective rank 2^1.5
    assert D.effective_rank(np.array([2.0, 1.0, 1.0])) == pytest.approx(2**1.5, rel=1e-12)


def test_singular_values_descend():
    x = np.tanh(np.random.default_rng(3).standard_normal((64, 16)) * 2)
    sv = D.singular_values(x)
    assert np.all(np.diff(sv) <= 0)
    np.testing.assert_allclose(sv, np.linalg.svd(x, compute_uv=False), rtol=1e-9)


def test_all_zero_features_have_rank_zero():
    sv = D.singular_values(np.zeros((10, 4)))
    assert np.all(sv == 0)
    assert (D.srank(sv), D.effective_rank(sv)) == (0, 0.0)


def test_rank_accepts_float16():
    sv = D.singular_values(np.eye(8, dtype=np.float16))
    assert (D.srank(sv), D.effective_rank(sv)) == (8, pytest.approx(8.0))


# ---------------------------------------------------------------------------------------------
# Dead units
# ---------------------------------------------------------------------------------------------
ACTIVATION_FUNCTIONS = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": torch.nn.functional.gelu,
    "silu": torch.nn.functional.silu,
}
MONOTONIC = [name for name in ACTIVATION_FUNCTIONS if name not in ("gelu", "silu")]
SCRIPTS = ["dqn_atari_hadamard", "ppo_atari_hadamard", "pqn_atari_hadamard"]


def autograd(name, x):
    """The activation's values and derivative at x (float64), by torch."""
    x = torch.as_tensor(x, dtype=torch.float64).requires_grad_(True)
    a = ACTIVATION_FUNCTIONS[name](x)
    (derivative,) = torch.autograd.grad(a.sum(), x)
    return a.detach().numpy(), derivative.numpy()


@pytest.mark.parametrize("name", MONOTONIC)
def test_local_gradient_is_the_derivative_at_the_output(name):
    a, derivative = autograd(name, np.linspace(-4, 4, 81))
    np.testing.assert_allclose(D.LOCAL_GRADIENTS[name](a), derivative, atol=1e-12)


@pytest.mark.parametrize("name", ["gelu", "silu"])
def test_non_monotonic_function_and_derivative_are_torchs(name):
    # from the flat tail (-40) through the dip and the steep part near 0 to the positive side
    x = np.concatenate([np.linspace(-40, -8, 33), np.linspace(-8, 4, 241)])
    a, derivative = autograd(name, x)
    function, local_gradient = D.NON_MONOTONIC[name]
    # torch's GELU takes 1 + erf(x / sqrt 2), which rounds to 0 far in the tail (below 1e-15): absolute tolerances
    np.testing.assert_allclose(function(x), a, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(local_gradient(x), derivative, rtol=1e-10, atol=1e-15)


def test_every_local_gradient_is_checked_against_autograd():
    # a new activation in diagnostics.LOCAL_GRADIENTS or NON_MONOTONIC needs its torch function in ACTIVATION_FUNCTIONS
    assert D.LOCAL_GRADIENTS.keys() | D.NON_MONOTONIC.keys() == ACTIVATION_FUNCTIONS.keys()
    assert not D.LOCAL_GRADIENTS.keys() & D.NON_MONOTONIC.keys()


@pytest.mark.parametrize("script", SCRIPTS)
def test_each_script_offers_exactly_the_activations_the_diagnostics_measure(script):
    module = importlib.import_module(script)
    choices = module.Args.__annotations__["activation"].__args__  # Literal["tanh", ...]
    assert set(choices) == set(module.ACTIVATIONS) == set(ACTIVATION_FUNCTIONS), script
    x = torch.linspace(-6, 6, 121, dtype=torch.float64)
    for name, function in module.ACTIVATIONS.items():
        torch.testing.assert_close(function(x), ACTIVATION_FUNCTIONS[name](x), msg=f"{script}: {name}")
        args = module.Args(activation=name, diagnostics_interval=1, diagnostics_samples=1024)
        assert not any(broken for broken, _ in D.argument_rules(args)), (script, name)


def test_flat_tail_edge_by_hand():
    """x_g, where |act'| reaches g coming up from the far tail (torch's slopes, rounded): GELU'(-2.80) = -0.01961
    (flat), GELU'(-2.78) = -0.02055 (steep); SiLU'(-5.5) = -0.01822, SiLU'(-5.0) = -0.02655. With g above the dip's
    steepest slope (GELU 0.129, at -sqrt 2) the whole descent is flat, down to the minimum, x = -0.7518."""
    gelu, silu = D.flat_tail_edge("gelu", 0.02), D.flat_tail_edge("silu", 0.02)
    assert -2.80 < gelu < -2.78 and -5.5 < silu < -5.0
    assert gelu == pytest.approx(-2.79158, abs=1e-5) and silu == pytest.approx(-5.37845, abs=1e-5)
    for name, edge in (("gelu", gelu), ("silu", silu)):
        assert autograd(name, edge)[1] == pytest.approx(-0.02, abs=1e-12)  # torch's slope there is -g
    assert D.flat_tail_edge("gelu", 0.05) == pytest.approx(-2.34860, abs=1e-5)  # a looser g: a longer tail
    assert D.flat_tail_edge("gelu", 0.2) == pytest.approx(-0.75179, abs=1e-5)


def test_gelu_dead_units_by_hand():
    """Dead: the input lies in the flat tail, below x_g = -2.79 (g = 0.02), on every sample. Slopes (torch):
    GELU'(-3) = -0.0119, GELU'(-2.5) = -0.0376, GELU'(-0.7518) = 0 (the minimum), GELU'(-0.01) = 0.49."""
    n = 8
    x = np.full((n, 7), -3.0)  # unit 0: in the tail: dead
    x[:, 1] = -2.5  # unit 1: the tail's steeper part: alive
    x[:, 2] = np.linspace(-12, -3, n)  # unit 2: deep in the tail: dead
    x[:, 3] = -0.7518  # unit 3: the minimum: its slope is 0 but it is no flat region, alive
    x[5, 4] = 1.0  # unit 4: in the tail but for one sample: alive
    x[:, 5] = np.linspace(-4, 2, n)  # unit 5: alive
    x[:, 6] = -0.01  # unit 6: GELU(-0.01) = -0.00496, an output the tail gives too (GELU(-2.9)): alive
    a = autograd("gelu", x)[0]
    assert D.dead_fraction(a, "gelu", inputs=x) == pytest.approx(2 / 7)
    assert D.dead_fraction(a, "gelu", inputs=x.astype(np.float16)) == pytest.approx(2 / 7)
    assert D.dead_fraction(a, "gelu", threshold=0.05, inputs=x) == pytest.approx(3 / 7)  # x_g = -2.35: unit 1 too
    # without the inputs, the outputs of the tail, [GELU(x_g), 0] = [-0.00732, 0]: unit 6 cannot be told apart
    assert D.dead_fraction(a, "gelu") == pytest.approx(3 / 7)
    assert D.dead_fraction(a.astype(np.float16), "gelu") == pytest.approx(3 / 7)
    # SiLU: x_g = -5.38; -6 lies in its tail (slope -0.0123), -5 not (-0.0265)
    x = np.array([[-6.0, -5.0]] * n)
    assert D.dead_fraction(autograd("silu", x)[0], "silu", inputs=x) == pytest.approx(1 / 2)


def test_gelu_product_is_dead_where_a_branch_is_in_its_tail_on_every_sample():
    """A branch in the flat tail (an output near 0) stops the gradient of both: through itself (its slope is below
    g) and through the other branch (times its own value, near 0), as a dead ReLU branch does. The product's own
    output cannot tell: GELU(-3) * GELU(2) = -0.00792 lies below the tail's outputs, GELU(-4)^2 above 0."""
    n = 8
    xa = np.full((n, 6), -3.0)  # unit 0: a in the tail everywhere, b = GELU(2) = 1.95: dead
    xb = np.full((n, 6), 2.0)
    xa[1::2, 1], xb[1::2, 1] = 3.0, -3.0  # unit 1: a in the tail on even samples, b on odd ones: dead
    xa[:, 2], xb[:, 2] = 0.02, 0.02  # unit 2: both near zero, the saddle of a * b: alive
    xa[3, 3], xb[3, 3] = 1.0, 1.0  # unit 3: a in the tail but for one sample, where neither is: alive
    xa[:, 4], xb[:, 4] = -2.0, -2.0  # unit 4: both on the steeper part of the tail: alive
    xa[:, 5], xb[:, 5] = -4.0, -4.0  # unit 5: both in the tail: dead
    a, b = autograd("gelu", xa)[0], autograd("gelu", xb)[0]
    assert D.dead_fraction(a * b, "gelu", branches=[(a, xa), (b, xb)]) == pytest.approx(3 / 6)
    assert D.dead_fraction(a * b, "gelu", branches=[(a, None), (b, None)]) == pytest.approx(3 / 6)  # outputs only
    assert D.dead_fraction(a * b, "gelu") == 0.0  # judged on the product's output alone, every unit looks alive
    acts = {"hadamard_a": a, "hadamard_a.input": xa, "hadamard_b": b, "hadamard_b.input": xb, "representation": a * b}
    kinds = D.layer_kinds(["hadamard_a", "hadamard_b", "representation"], "gelu")
    dead = {name: m["dead_fraction"] for name, m in D.compute_metrics(acts, kinds).items()}
    assert dead == {"hadamard_a": pytest.approx(2 / 6), "hadamard_b": pytest.approx(1 / 6), "representation": 0.5}
    # a plain GELU layer is judged on its own inputs
    plain = D.compute_metrics({"representation": a, "representation.input": xa}, {"representation": "gelu"})
    assert list(plain) == ["representation"] and plain["representation"]["dead_fraction"] == pytest.approx(2 / 6)
    # the monotonic activations keep their rule on the product's output, branches given or not
    t = np.tanh(xa)
    assert D.dead_fraction(t * t, "tanh", branches=[(t, xa), (t, xa)]) == D.dead_fraction(t * t, "tanh")


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("hadamard", [True, False])
def test_capture_keeps_the_inputs_of_the_activation_and_files_keep_them_for_gelu(script, hadamard, tmp_path):
    module = importlib.import_module(script)
    network_class = module.Agent if hasattr(module, "Agent") else module.QNetwork
    probe = torch.randint(0, 256, (72, 4, 84, 84), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    network = network_class(4, "gelu", hadamard, 16)
    acts = D.capture_activations(network, probe, chunk_size=32)  # chunks of 32, 32 and 8
    made_by_act = ["hadamard_a", "hadamard_b"] if hadamard else ["representation"]
    assert [name for name in acts if name.endswith(".input")] == [f"{name}.input" for name in made_by_act]
    for name in made_by_act:  # the inputs are those that give the outputs
        outputs = torch.nn.functional.gelu(torch.from_numpy(acts[f"{name}.input"]))
        np.testing.assert_allclose(outputs.numpy(), acts[name], rtol=1e-6, atol=1e-7)
    assert network.act is module.ACTIVATIONS["gelu"]  # put back after the capture
    live = D.log_diagnostics(None, 5, acts, hidden_activation="gelu", save_dir=str(tmp_path / "gelu"))
    assert list(live) == [name for name in acts if not name.endswith(".input")]
    _, loaded, kinds, thresholds = D.load_activations(str(tmp_path / "gelu" / "step_5.npz"))
    assert set(loaded) == set(acts) and D.compute_metrics(loaded, kinds, **thresholds) == live
    # a monotonic activation's output determines its input: its files stay as they were
    tanh = D.capture_activations(network_class(4, "tanh", hadamard, 16), probe)
    D.log_diagnostics(None, 5, tanh, hidden_activation="tanh", save_dir=str(tmp_path / "tanh"))
    _, loaded, _, _ = D.load_activations(str(tmp_path / "tanh" / "step_5.npz"))
    assert not any(name.endswith(".input") for name in loaded)


def test_tanh_dead_units():
    n = 10
    acts = np.zeros((n, 5))
    acts[:, 0] = 0.995  # 1 - a^2 = 0.0100 < 0.02 on every sample: dead
    acts[:, 1] = -0.999  # dead
    acts[:, 2] = 0.999
    acts[4, 2] = 0.5  # saturated on all but one sample: alive
    acts[:, 3] = np.linspace(-0.5, 0.5, n)  # alive
    acts[:, 4] = 0.985  # |a| < 0.99: 1 - a^2 = 0.0298, alive
    assert D.dead_fraction(acts, "tanh") == pytest.approx(2 / 5)
    assert D.dead_fraction(acts.astype(np.float16), "tanh") == pytest.approx(2 / 5)
    # a looser threshold also kills unit 4
    assert D.dead_fraction(acts, "tanh", threshold=0.05) == pytest.approx(3 / 5)
    # dead means a gradient below g: at g itself a unit is alive (1 - 0.5^2 = 0.75 exactly)
    assert D.dead_fraction(np.full((3, 2), 0.5), "tanh", threshold=0.75) == 0.0
    assert D.dead_fraction(np.full((3, 2), 0.5), "tanh", threshold=np.nextafter(0.75, 1)) == 1.0


def test_relu_dead_units():
    acts = np.zeros((6, 4))
    acts[:, 1] = 1.0
    acts[3, 2] = 0.3  # fires once: alive
    # units 0 and 3 never fire
    assert D.dead_fraction(acts, "relu") == pytest.approx(0.5)
    acts[0, 3] = 1e-3  # any positive value is a gradient of 1
    assert D.dead_fraction(acts, "relu") == pytest.approx(0.25)


def test_sigmoid_dead_units():
    acts = np.full((5, 4), 0.5)
    acts[:, 0] = 0.999  # a(1 - a) = 0.000999: dead
    acts[:, 1] = 0.001  # dead
    acts[:, 2] = 0.999
    acts[2, 2] = 0.5  # alive
    assert D.dead_fraction(acts, "sigmoid") == pytest.approx(0.5)


def test_tanh_product_is_dead_only_when_both_branches_saturate():
    # the same rule as for any tanh unit, applied to the product's output h = a * b
    n = 6
    a = np.full((n, 5), 0.999)
    b = np.full((n, 5), -0.999)  # unit 0: both saturated, |h| = 0.998: dead
    b[:, 1] = 0.3  # unit 1: a saturated, b not: alive
    a[:, 2] = 0.3  # unit 2: b saturated, a not: alive
    b[3, 3] = 0.0  # unit 3: both saturated except one sample of b: alive
    a[:, 4] = 0.001  # unit 4: both near zero, a saddle of a * b, not saturation: alive
    b[:, 4] = 0.001
    assert D.dead_fraction(a * b, "tanh") == pytest.approx(1 / 5)
    assert D.dead_fraction(a, "tanh") == pytest.approx(3 / 5)  # a alone: units 0, 1, 3


def test_relu_product_dies_with_one_dead_branch():
    n = 6
    a = np.zeros((n, 4))
    b = np.zeros((n, 4))
    a[::2, 0] = 1.0  # unit 0: a fires on even samples, b on odd ones: never both
    b[1::2, 0] = 1.0
    a[:, 1] = 1.0 * (np.arange(n) % 2)  # unit 1: both fire on sample 1 only: alive
    b[1, 1] = 1.0
    b[:, 2] = 2.0  # unit 2: a never fires: dead
    a[:, 3] = 1.0  # unit 3: both always fire: alive
    b[:, 3] = 1.0
    assert D.dead_fraction(a * b, "relu") == pytest.approx(0.5)
    # each branch alone looks healthier than the product (only a's unit 2 is dead)
    assert D.dead_fraction(a, "relu") == pytest.approx(0.25)
    assert D.dead_fraction(b, "relu") == pytest.approx(0.0)


def test_sigmoid_product():
    a = np.full((4, 3), 0.999)
    b = np.full((4, 3), 0.999)  # unit 0: both saturated high, h(1 - h) = 0.002: dead
    b[:, 1] = 0.5  # unit 1: h = 0.4995: alive
    a[:, 2] = 0.001  # unit 2: a silent zeroes the product, as with ReLU: dead
    b[:, 2] = 0.5
    assert D.dead_fraction(a * b, "sigmoid") == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------------------
# Dormant units
# ---------------------------------------------------------------------------------------------
def test_dormant_fraction_and_scores():
    acts = np.ones((8, 4))
    acts[:, 0] = 0.01 * np.where(np.arange(8) % 2, 1, -1)  # near-silent, mixed signs
    acts[:, 3] = -1.0  # |a| counts, not a
    scores = D.dormant_scores(acts)
    layer_mean = (0.01 + 3.0) / 4
    np.testing.assert_allclose(scores, np.array([0.01, 1, 1, 1]) / (layer_mean + 1e-9), rtol=1e-12)
    assert D.dormant_fraction(acts) == 0.25
    assert D.dormant_fraction(acts, tau=0.01) == 0.0  # s_0 = 0.0133 > 0.01
    # the boundary: s_i <= tau counts as dormant
    assert D.dormant_fraction(acts, tau=float(scores[0])) == 0.25
    assert D.dormant_fraction(acts, tau=float(np.nextafter(scores[0], 0))) == 0.0


def test_dormant_misses_saturation_and_counts_silence():
    saturated = np.full((5, 3), 1.0)  # tanh stuck at 1: dead, but not dormant
    assert D.dead_fraction(saturated, "tanh") == 1.0
    assert D.dormant_fraction(saturated) == 0.0
    assert D.dormant_fraction(np.zeros((5, 3))) == 1.0
    silent_one = np.ones((5, 3))
    silent_one[:, 2] = 0.0
    assert D.dormant_fraction(silent_one, tau=0.0) == pytest.approx(1 / 3)  # ReDo's tau = 0


# ---------------------------------------------------------------------------------------------
# Conv layers: a unit is a channel
# ---------------------------------------------------------------------------------------------
def test_conv_channel_alive_at_one_position_of_one_sample():
    acts = np.zeros((3, 4, 5, 5))
    acts[2, 1, 3, 4] = 0.7
    acts[:, 3] = 0.2  # fires everywhere
    assert D.check_layer(acts).shape == (3 * 5 * 5, 4)  # a row per sample and position, a unit per channel
    assert D.dead_fraction(D.check_layer(acts), "relu") == pytest.approx(0.5)

    tanh = np.full((3, 2, 4, 4), 0.999)
    tanh[1, 0, 2, 2] = 0.0
    assert D.dead_fraction(D.check_layer(tanh), "tanh") == pytest.approx(0.5)


def test_conv_dormant_is_per_channel_and_matches_spatial_means():
    rng = np.random.default_rng(4)
    acts = np.maximum(rng.standard_normal((6, 4, 3, 3)), 0)
    acts[:, 2] *= 1e-3
    expected = np.abs(acts).mean(axis=(0, 2, 3))
    expected = expected / (expected.mean() + 1e-9)
    rows = D.check_layer(acts)
    np.testing.assert_allclose(D.dormant_scores(rows), expected, rtol=1e-12)
    assert D.dormant_fraction(rows) == 0.25
    # for ReLU, the (n, c) spatial means kept by capture_activations give the same answers
    means = acts.mean(axis=(2, 3))
    np.testing.assert_allclose(D.dormant_scores(means), D.dormant_scores(rows), rtol=1e-12)
    assert D.dead_fraction(means, "relu") == D.dead_fraction(rows, "relu")


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: D.check_layer(np.zeros((0, 4))), "empty"),
        (lambda: D.check_layer(np.array([[0.1], [np.nan]])), "NaN"),
        (lambda: D.check_layer(np.array([[0.1], [np.inf]])), "inf"),
        (lambda: D.check_layer(np.zeros(4)), "2-D"),
        (lambda: D.check_layer(np.zeros((2, 3, 4))), "2-D"),
        (lambda: D.check_layer(np.array([["a"], ["b"]])), "real numbers"),
        (lambda: D.check_layer(np.zeros((3, 5))), "the rank needs n >= d samples"),
        (lambda: D.check_layer(np.zeros((0, 0))), "empty"),
        (lambda: D.check_thresholds(0.0, 0.025, 0.01), "dead_threshold"),
        (lambda: D.check_thresholds(math.inf, 0.025, 0.01), "dead_threshold"),
        (lambda: D.check_thresholds(0.02, -1.0, 0.01), "dormant_tau"),
        (lambda: D.check_thresholds(0.02, math.nan, 0.01), "dormant_tau"),
        (lambda: D.check_thresholds(0.02, 0.025, 0.0), "srank_delta"),
        (lambda: D.check_thresholds(0.02, 0.025, 1.0), "srank_delta"),
        (lambda: D.compute_metrics({"conv1": np.zeros((4, 2))}, {"conv1": "softsign"}), "unknown activation"),
        (
            lambda: D.compute_metrics(
                {"hadamard_a": np.zeros((4, 3)), "representation": np.zeros((4, 2))},
                {"hadamard_a": "gelu", "representation": "gelu"},
            ),
            "its branches' shapes",
        ),
        (
            lambda: D.compute_metrics(
                {"representation": np.zeros((4, 2)), "hadamard_a.input": np.zeros((4, 2))}, {"representation": "gelu"}
            ),
            "not the inputs of a layer",
        ),
        (lambda: D.compute_metrics({"conv1": np.zeros((4, 2))}, {}), "unknown activation"),
        (lambda: D.compute_metrics({"conv1": np.zeros((4, 2))}, {"conv1": "relu"}, dormant_tau=-1), "dormant_tau"),
        (
            lambda: D.compute_metrics({"conv1": np.full((4, 2), np.nan)}, {"conv1": "relu"}),
            "layer 'conv1' contains NaN",
        ),
        (lambda: D.log_diagnostics(None, 1, {"representation": np.zeros((4, 2))}, hidden_activation="swish"), "swish"),
    ],
)
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------------
# Whole networks
# ---------------------------------------------------------------------------------------------
def fake_activations(seed=0, n=64, d=16, saturated=3):
    """Layers as a Hadamard network's capture returns them: conv (n, c) means, the branches, the product."""
    rng = np.random.default_rng(seed)
    a = np.tanh(2 * rng.standard_normal((n, d))).astype(np.float32)
    b = np.tanh(2 * rng.standard_normal((n, d))).astype(np.float32)
    a[:, :saturated] = 0.9999  # saturated in a, and in b for the first unit only
    b[:, 0] = -0.9999
    conv = np.maximum(rng.standard_normal((n, 8)), 0).astype(np.float32)
    conv[:, 0] = 0.0
    return {
        "conv1": conv,
        "conv2": conv[:, ::-1].copy(),
        "conv3": conv * 2,
        "hadamard_a": a,
        "hadamard_b": b,
        "representation": a * b,
    }


def test_layer_kinds():
    kinds = D.layer_kinds(["conv1", "conv3", "hadamard_a", "representation"], "sigmoid")
    assert kinds == {"conv1": "relu", "conv3": "relu", "hadamard_a": "sigmoid", "representation": "sigmoid"}
    assert list(kinds) == ["conv1", "conv3", "hadamard_a", "representation"]


def test_compute_metrics_one_rule_for_every_layer():
    acts = fake_activations()
    metrics = D.compute_metrics(acts, D.layer_kinds(list(acts), "tanh"))
    assert list(metrics) == list(acts)
    for values in metrics.values():
        assert set(values) == set(D.METRICS)
    assert metrics["hadamard_a"]["dead_fraction"] == pytest.approx(3 / 16)
    assert metrics["hadamard_b"]["dead_fraction"] == pytest.approx(1 / 16)
    assert metrics["representation"]["dead_fraction"] == pytest.approx(1 / 16)  # only unit 0: both saturated
    assert metrics["conv1"]["dead_fraction"] == pytest.approx(1 / 8)
    assert metrics["conv1"]["dormant_fraction"] == pytest.approx(1 / 8)
    assert metrics["conv1"]["srank"] <= 7  # the silent channel adds no direction
    # a tanh product's metrics depend on its own values only, not on whether its branches are given
    alone = D.compute_metrics({"representation": acts["representation"]}, {"representation": "tanh"})
    assert alone["representation"] == metrics["representation"]


def test_near_zero_product_at_initialisation_is_not_dead():
    # small pre-activations, as PyTorch's default initialisation gives, some units smaller than others
    rng = np.random.default_rng(6)
    scale = np.geomspace(1e-3, 0.1, 16)
    a = np.tanh(scale * rng.standard_normal((64, 16))).astype(np.float32)
    b = np.tanh(scale * rng.standard_normal((64, 16))).astype(np.float32)
    # many units sit at the saddle of a * b: its gradient |b| tanh'(a) + |a| tanh'(b) is below g everywhere
    saddle = np.all(np.abs(b) * (1 - a * a) + np.abs(a) * (1 - b * b) < 0.02, axis=0)
    assert saddle.sum() >= 4
    acts = {"hadamard_a": a, "hadamard_b": b, "representation": a * b}
    metrics = D.compute_metrics(acts, D.layer_kinds(list(acts), "tanh"))
    assert {name: m["dead_fraction"] for name, m in metrics.items()} == {
        "hadamard_a": 0.0,
        "hadamard_b": 0.0,
        "representation": 0.0,
    }


def test_compute_metrics_rounds_to_float16_and_checks_layers():
    acts = fake_activations(seed=1)
    kinds = D.layer_kinds(list(acts), "tanh")
    rounded = {k: v.astype(np.float16) for k, v in acts.items()}
    assert D.compute_metrics(acts, kinds) == D.compute_metrics(rounded, kinds)
    with pytest.raises(ValueError, match="conv2"):  # a layer without its activation
        D.compute_metrics(acts, {"conv1": "relu"})
    with pytest.raises(ValueError, match="representation"):
        D.compute_metrics({"representation": np.zeros((4, 8))}, {"representation": "tanh"})


def test_to_float16_clips_instead_of_overflowing():
    x = D.to_float16(np.array([[1e6, -1e6, 0.1]], dtype=np.float32))
    assert x.dtype == np.float16 and np.isfinite(x).all()
    assert x[0, 0] == np.finfo(np.float16).max
    big = {"representation": np.full((4, 2), 1e6, dtype=np.float32)}
    assert D.compute_metrics(big, {"representation": "relu"})["representation"]["dead_fraction"] == 0.0


def test_save_load_round_trip_equals_live_metrics(tmp_path):
    acts = fake_activations(seed=2)
    save_dir = tmp_path / "run" / "activations"  # created on demand
    thresholds = {"dead_threshold": 0.03, "dormant_tau": 0.1, "srank_delta": 0.05}
    live = D.log_diagnostics(None, 1234, acts, hidden_activation="tanh", save_dir=str(save_dir), **thresholds)
    assert os.listdir(save_dir) == ["step_1234.npz"]  # no temporary file left behind
    with np.load(save_dir / "step_1234.npz", allow_pickle=False) as data:
        assert all(data[k].dtype == np.float16 for k in acts)
    step, loaded, kinds, stored = D.load_activations(str(save_dir / "step_1234.npz"))
    assert step == 1234
    assert list(loaded) == list(acts)
    assert kinds == D.layer_kinds(list(acts), "tanh")
    assert stored == thresholds
    for name, x in acts.items():
        assert loaded[name].shape == x.shape
        np.testing.assert_array_equal(loaded[name], x.astype(np.float16))
    assert D.compute_metrics(loaded, kinds, **stored) == live


def write_old_file(path, acts, activation="tanh"):
    """A file as saved before the product layer was called "representation": it was "hadamard" then."""
    old = {("hadamard" if name == "representation" else name): x.astype(np.float16) for name, x in acts.items()}
    metadata = {
        "format": 1,
        "step": int(path.stem.split("_")[1]),
        "layers": list(old),
        "kinds": D.layer_kinds(list(old), activation),
        "products": {"hadamard": ["hadamard_a", "hadamard_b"]},
        "dead_threshold": 0.02,
        "dormant_tau": 0.025,
        "srank_delta": 0.01,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **old, __metadata__=np.array(json.dumps(metadata)))


def test_load_reads_files_written_under_the_old_name(tmp_path):
    acts = fake_activations(seed=7)
    write_old_file(tmp_path / "step_50.npz", acts)
    step, loaded, kinds, _ = D.load_activations(str(tmp_path / "step_50.npz"))
    assert step == 50
    assert list(loaded) == list(acts) and list(kinds) == list(acts)
    np.testing.assert_array_equal(loaded["representation"], acts["representation"].astype(np.float16))
    assert D.compute_metrics(loaded, kinds) == D.compute_metrics(acts, D.layer_kinds(list(acts), "tanh"))


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    def disk_full(f, **arrays):
        f.write(b"PK partial")
        raise OSError("no space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="no space"):
        D.log_diagnostics(None, 7, fake_activations(), hidden_activation="tanh", save_dir=str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_load_gives_the_reason_a_file_is_unreadable(tmp_path, monkeypatch):
    garbage = tmp_path / "step_1.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match=r"step_1.npz \(not an .npz file\)"):
        D.load_activations(str(garbage))

    D.log_diagnostics(None, 2, fake_activations(), hidden_activation="relu", save_dir=str(tmp_path))
    whole = (tmp_path / "step_2.npz").read_bytes()
    truncated = tmp_path / "step_3.npz"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match=r"step_3.npz \(a damaged .npz file"):
        D.load_activations(str(truncated))

    no_metadata = tmp_path / "step_4.npz"
    np.savez(no_metadata, conv1=np.zeros((4, 2), np.float16))
    with pytest.raises(ValueError, match=r"step_4.npz \(missing entry '__metadata__'\)"):
        D.load_activations(str(no_metadata))

    with pytest.raises(ValueError, match=r"step_5.npz \(No such file"):
        D.load_activations(str(tmp_path / "step_5.npz"))

    (tmp_path / "step_6.npz").mkdir()
    with pytest.raises(ValueError, match=r"step_6.npz \(a folder, not a file\)"):
        D.load_activations(str(tmp_path / "step_6.npz"))

    # the test may run as root, which chmod cannot lock out: the refusal is simulated
    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(D, "open", refuse, raising=False)
    with pytest.raises(ValueError, match=r"step_2.npz \(permission denied\)"):
        D.load_activations(str(tmp_path / "step_2.npz"))


class TinyNet(torch.nn.Module):
    """A network with the scripts' layer_outputs interface."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 3, kernel_size=3)
        self.fc_a = torch.nn.Linear(3 * 4 * 4, 5)
        self.fc_b = torch.nn.Linear(3 * 4 * 4, 5)
        self.grad_enabled = []

    def layer_outputs(self, x):
        self.grad_enabled.append(torch.is_grad_enabled())
        c = torch.relu(self.conv(x))
        z = c.flatten(1)
        a, b = torch.tanh(self.fc_a(z)), torch.tanh(self.fc_b(z))
        return {"conv1": c, "hadamard_a": a, "hadamard_b": b, "representation": a * b}


def test_capture_activations_chunks_and_reduces_conv():
    net = TinyNet()
    obs = torch.randn(7, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    captured = D.capture_activations(net, obs, chunk_size=3)
    assert net.grad_enabled == [False, False, False]  # three chunks, all without autograd
    assert list(captured) == ["conv1", "hadamard_a", "hadamard_b", "representation"]
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in captured.values())
    assert captured["conv1"].shape == (7, 3)
    assert captured["representation"].shape == (7, 5)
    with torch.no_grad():
        full = net.layer_outputs(obs)
    np.testing.assert_allclose(captured["conv1"], full["conv1"].mean(dim=(2, 3)).numpy(), atol=1e-6)
    np.testing.assert_allclose(captured["representation"], full["representation"].numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        D.capture_activations(net, obs[:0])


def test_log_diagnostics_writes_expected_tags(tmp_path):
    acts = fake_activations(seed=3)
    acts = {"conv1": acts["conv1"], "representation": acts["hadamard_a"]}
    writer = SummaryWriter(str(tmp_path))
    m10 = D.log_diagnostics(writer, 10, acts, hidden_activation="tanh")
    m20 = D.log_diagnostics(writer, 20, acts, hidden_activation="tanh")
    writer.close()
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    tags = events.Tags()
    expected = {f"diagnostics/{m}/{layer}" for m in D.METRICS for layer in acts}
    assert set(tags["scalars"]) == expected
    assert set(tags["histograms"]) == {"activations/conv1", "activations/representation"}
    srank = events.Scalars("diagnostics/srank/representation")
    assert [e.step for e in srank] == [10, 20]
    assert srank[0].value == m10["representation"]["srank"] == m20["representation"]["srank"]
    dead = events.Scalars("diagnostics/dead_fraction/representation")[0].value
    assert dead == pytest.approx(3 / 16)
    assert not any(name.endswith(".npz") for name in os.listdir(tmp_path))  # save_dir not given


@pytest.mark.parametrize("script", ["dqn_atari_hadamard", "ppo_atari_hadamard", "pqn_atari_hadamard"])
def test_hadamard_and_plain_runs_share_the_representation_charts(script, tmp_path):
    module = importlib.import_module(script)
    network_class = module.Agent if hasattr(module, "Agent") else module.QNetwork
    probe = torch.randint(0, 256, (64, 4, 84, 84), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    tags = {}
    for hadamard in (True, False):
        network = network_class(4, hadamard=hadamard, hidden_dim=16 if hadamard else 32)
        writer = SummaryWriter(str(tmp_path / str(hadamard)))
        D.log_diagnostics(writer, 1, D.capture_activations(network, probe), hidden_activation="tanh")
        writer.close()
        events = EventAccumulator(str(tmp_path / str(hadamard)))
        events.Reload()
        tags[hadamard] = set(events.Tags()["scalars"])
    representation = {f"diagnostics/{m}/representation" for m in D.METRICS}
    assert representation <= tags[True] and representation <= tags[False]
    # the runs differ only by the branches' charts
    branches = {f"diagnostics/{m}/hadamard_{x}" for m in D.METRICS for x in "ab"}
    assert tags[True] - tags[False] == branches and tags[False] <= tags[True]


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def run_cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "diagnostics.py"), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def legend_and_rows(out):
    """The command line's table: its legend lines ("run i: folder, variant") and its rows, split into cells."""
    lines = out.splitlines()
    end = lines.index("")
    assert lines[end + 2].split()[:2] == ["step", "layer"]
    return lines[:end], [line.split() for line in lines[end + 3 :]]


def write_args(run, activation="tanh", hadamard=True, hidden_dim=16, seed=1):
    """Some fields of a DQN run's args.json (a real one holds every argument) and its status.json's script: the
    command line labels a run as compare_runs.py does."""
    run.mkdir(parents=True, exist_ok=True)
    fields = {"exp_name": "dqn_atari_hadamard", "activation": activation, "hadamard": hadamard,
              "hidden_dim": hidden_dim, "seed": seed}  # fmt: skip
    (run / "args.json").write_text(json.dumps(fields))
    (run / "status.json").write_text(json.dumps({"script": "dqn_atari_hadamard.py", "status": "finished"}))


def test_cli_reports_steps_skips_corrupt_file_and_writes_csv(tmp_path):
    run = tmp_path / "Breakout-v5__dqn__1__1700000000"
    write_args(run, seed=3)
    acts = fake_activations(seed=4)
    # a non-default tau: the command line uses the thresholds stored in the files
    expected = {
        step: D.log_diagnostics(
            None,
            step,
            acts if step == 2000 else fake_activations(5),
            hidden_activation="tanh",
            dormant_tau=0.9,
            save_dir=str(run / "activations"),
        )
        for step in (2000, 300)
    }
    default_tau = D.compute_metrics(acts, D.layer_kinds(list(acts), "tanh"))
    assert default_tau["representation"]["dormant_fraction"] != expected[2000]["representation"]["dormant_fraction"]
    (run / "activations" / "step_1000.npz").write_bytes(b"\x00" * 64)
    out_csv = tmp_path / "metrics.csv"
    result = run_cli(run, "--csv", out_csv)
    assert result.returncode == 1  # a file could not be read; the rest is still reported
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: cannot read activation file {run / 'activations' / 'step_1000.npz'} (not an .npz file)"
    ]
    legend, rows = legend_and_rows(result.stdout)
    assert legend == [f"run 1: {run.name}, dqn, tanh+hadamard, 16, seed 3"]
    assert [r[0] for r in rows] == ["300"] * 6 + ["2000"] * 6  # sorted numerically
    assert [r[1] for r in rows[:6]] == list(acts)
    srank_300 = expected[300]["representation"]["srank"]
    assert rows[5][:2] == ["300", "representation"] and int(rows[5][4]) == srank_300

    with open(out_csv, newline="") as f:
        records = list(csv.DictReader(f))
    assert len(records) == 12
    assert list(records[0]) == ["run", "variant", "step", "layer", *D.METRICS]
    for r in records:
        values = expected[int(r["step"])][r["layer"]]
        assert r["run"] == run.name and r["variant"] == "dqn, tanh+hadamard, 16, seed 3"
        assert int(r["srank"]) == values["srank"]
        assert float(r["dead_fraction"]) == values["dead_fraction"]
        assert float(r["dormant_fraction"]) == values["dormant_fraction"]
        assert float(r["effective_rank"]) == values["effective_rank"]


def test_cli_says_why_a_folder_cannot_be_read(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a run")
    for folder, reason in (
        (tmp_path / "no_such_run", "no such folder"),
        (tmp_path, "no activation files"),
        (a_file, "not a folder"),
    ):
        result = run_cli(folder)
        assert result.returncode == 1
        assert len(result.stderr.splitlines()) == 1
        assert result.stderr.startswith(f"error: {folder}: {reason}")
        assert result.stdout == ""


def test_cli_prints_what_it_can_and_fails_for_an_unreadable_folder(tmp_path, capsys, monkeypatch):
    good, locked = tmp_path / "good", tmp_path / "locked"
    write_args(good, activation="relu", hadamard=False, hidden_dim=1024)
    D.log_diagnostics(None, 10, fake_activations(), hidden_activation="relu", save_dir=str(good / "activations"))
    D.log_diagnostics(None, 10, fake_activations(), hidden_activation="relu", save_dir=str(locked / "activations"))
    listdir = os.listdir

    def refuse_locked(path="."):  # chmod cannot lock out root, who may run the tests: the refusal is simulated
        if str(locked) in str(path):
            raise PermissionError(13, "Permission denied", path)
        return listdir(path)

    monkeypatch.setattr(D.os, "listdir", refuse_locked)
    assert D.main([str(good), str(locked)]) == 1
    out, err = capsys.readouterr()
    assert err.splitlines() == [f"error: {locked / 'activations'}: permission denied"]
    legend, rows = legend_and_rows(out)
    assert legend == ["run 1: good, dqn, relu, 1024, seed 1"]
    assert len(rows) == 6


def test_cli_runs_side_by_side_in_process(tmp_path, capsys):
    for name, steps in (("run_a", (10, 20)), ("run_b", (20,))):
        write_args(tmp_path / name, hadamard=name == "run_a", hidden_dim=16 if name == "run_a" else 32)
        for step in steps:
            acts = fake_activations(step)
            if name == "run_b":
                del acts["hadamard_a"], acts["hadamard_b"]
            D.log_diagnostics(None, step, acts, hidden_activation="relu", save_dir=str(tmp_path / name / "activations"))
    # the plain run's files are read from its activations folder, named directly
    assert D.main([str(tmp_path / "run_a"), str(tmp_path / "run_b" / "activations"), "--dormant-tau", "0.5"]) == 0
    out = capsys.readouterr().out
    legend, rows = legend_and_rows(out)
    assert legend == ["run 1: run_a, dqn, tanh+hadamard, 16, seed 1", "run 2: activations, dqn, tanh, 32, seed 1"]
    assert out.splitlines()[3].split() == ["run", "1", "run", "2"]
    assert out.splitlines()[4].split() == ["step", "layer"] + ["dead", "dormant", "srank", "erank"] * 2
    step10 = [row for row in rows if row[0] == "10"]
    step20 = [row for row in rows if row[0] == "20"]
    assert len(step10) == 6 and len(step20) == 6
    assert all(len(r) == 2 + 4 for r in step10)  # run_b's cells are empty at step 10
    assert [len(r) for r in step20] == [10, 10, 10, 6, 6, 10]  # run_b has no branches
    assert step20[-1][1] == "representation"  # one row holds both variants' representation
    # the threshold given on the command line overrides the one stored in the file
    _, acts, kinds, _ = D.load_activations(str(tmp_path / "run_a/activations/step_10.npz"))
    tau = D.compute_metrics(acts, kinds, dormant_tau=0.5)
    assert float(step10[0][3]) == pytest.approx(tau["conv1"]["dormant_fraction"], abs=1e-4)
    assert D.main([str(tmp_path / "run_a"), "--srank-delta", "2"]) == 2
    # the plain run first: the branches still sit between conv3 and the representation
    assert D.main([str(tmp_path / "run_b"), str(tmp_path / "run_a")]) == 0
    _, rows = legend_and_rows(capsys.readouterr().out)
    assert [r[1] for r in rows if r[0] == "20"] == list(fake_activations())


def test_cli_reads_old_runs_next_to_new_ones(tmp_path, capsys):
    acts = fake_activations(seed=8)
    write_old_file(tmp_path / "old" / "activations" / "step_100.npz", acts)
    D.log_diagnostics(None, 100, acts, hidden_activation="tanh", save_dir=str(tmp_path / "new" / "activations"))
    assert D.main([str(tmp_path / "old"), str(tmp_path / "new")]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"warning: {tmp_path / name}: no readable args.json, variant unknown" for name in ("old", "new")
    ]
    legend, rows = legend_and_rows(out)
    assert legend == ["run 1: old, variant unknown", "run 2: new, variant unknown"]
    assert [r[1] for r in rows] == list(acts)
    assert rows[-1][2:6] == rows[-1][6:10]  # the old file's "hadamard" is the new file's "representation"
