"""Tests for diagnostics.py: every metric on inputs whose answer is known by construction."""

import csv
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
    np.testing.assert_allclose(D.singular_values(x), s, rtol=1e-9)
    assert D.srank(x, delta=0.01) == 6
    assert D.srank(x, delta=0.03) == 5
    assert D.srank(x, delta=0.05) == 4
    assert D.srank(x, delta=0.25) == 2
    assert D.srank(x, delta=0.5) == 1
    assert D.srank_from_singular_values(s[::-1], 0.01) == 6  # order of the input does not matter
    # exactly at the boundary, sum_{i<=k} / sum == 1 - delta, k counts
    assert D.srank_from_singular_values([1, 1, 1, 1], delta=0.25) == 3
    assert D.srank_from_singular_values([1, 1, 1, 1], delta=0.5) == 2


def test_rank_of_a_rank_deficient_matrix():
    s = np.array([3.0, 2.0, 1.0, 0.0, 0.0])
    x = matrix_with_singular_values(s, n=12, seed=1)
    sv = D.singular_values(x)
    assert np.all(sv[3:] == 0)  # rounding noise below the Gram matrix's precision becomes 0
    assert D.srank(x) == 3
    p = np.array([3, 2, 1]) / 6
    assert D.effective_rank(x) == pytest.approx(math.exp(-(p * np.log(p)).sum()), rel=1e-9)


def test_effective_rank_of_identity_and_rank_one():
    assert D.effective_rank(np.eye(16)) == pytest.approx(16.0, rel=1e-12)
    rng = np.random.default_rng(2)
    rank_one = np.outer(rng.standard_normal(40), rng.standard_normal(8))
    assert D.effective_rank(rank_one) == pytest.approx(1.0, abs=1e-12)
    assert D.srank(rank_one) == 1
    assert D.effective_rank_from_singular_values([1, 1, 0, 0]) == pytest.approx(2.0)


def test_rank_metrics_agrees_with_separate_calls():
    x = np.tanh(np.random.default_rng(3).standard_normal((64, 16)) * 2)
    assert D.rank_metrics(x, 0.05) == (D.srank(x, 0.05), D.effective_rank(x))
    assert np.all(np.diff(D.singular_values(x)) <= 0)  # descending


def test_all_zero_features_have_rank_zero():
    z = np.zeros((10, 4))
    assert np.all(D.singular_values(z) == 0)
    assert D.rank_metrics(z) == (0, 0.0)


def test_rank_accepts_float16():
    x = np.eye(8, dtype=np.float16)
    assert D.rank_metrics(x) == (8, pytest.approx(8.0))


# ---------------------------------------------------------------------------------------------
# Dead units
# ---------------------------------------------------------------------------------------------
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


def test_hadamard_tanh_dead_only_where_both_branches_are_saturated():
    n = 6
    a = np.full((n, 5), 0.999)
    b = np.full((n, 5), -0.999)
    b[:, 1] = 0.3  # a saturated, b not: alive
    a[:, 2] = 0.3  # b saturated, a not: alive
    b[3, 3] = 0.0  # both saturated except one sample of b: alive
    a[:, 4] = 0.001  # both near zero: |b| a' + |a| b' = 0.002, no gradient either
    b[:, 4] = 0.001
    assert D.hadamard_dead_fraction(a, b, "tanh") == pytest.approx(2 / 5)
    assert D.dead_fraction(a, "tanh") == pytest.approx(3 / 5)  # a alone: units 0, 1, 3


def test_hadamard_relu_dead_where_a_branch_is_zero_on_every_sample():
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
    assert D.hadamard_dead_fraction(a, b, "relu") == pytest.approx(0.5)
    # each branch alone looks healthier than the product (only a's unit 2 is dead)
    assert D.dead_fraction(a, "relu") == pytest.approx(0.25)
    assert D.dead_fraction(b, "relu") == pytest.approx(0.0)


def test_hadamard_sigmoid():
    a = np.full((4, 2), 0.999)
    b = np.full((4, 2), 0.001)
    b[:, 1] = 0.5  # a saturated, b not: gradient |a| b' = 0.25
    assert D.hadamard_dead_fraction(a, b, "sigmoid") == pytest.approx(0.5)


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
    assert D.dead_fraction(acts, "relu") == pytest.approx(0.5)

    tanh = np.full((3, 2, 4, 4), 0.999)
    tanh[1, 0, 2, 2] = 0.0
    assert D.dead_fraction(tanh, "tanh") == pytest.approx(0.5)

    a = np.ones((2, 2, 3, 3))
    b = np.zeros((2, 2, 3, 3))
    b[0, 1, 0, 0] = 1.0
    assert D.hadamard_dead_fraction(a, b, "relu") == pytest.approx(0.5)


def test_conv_dormant_is_per_channel_and_matches_spatial_means():
    rng = np.random.default_rng(4)
    acts = np.maximum(rng.standard_normal((6, 4, 3, 3)), 0)
    acts[:, 2] *= 1e-3
    expected = np.abs(acts).mean(axis=(0, 2, 3))
    expected = expected / (expected.mean() + 1e-9)
    np.testing.assert_allclose(D.dormant_scores(acts), expected, rtol=1e-12)
    assert D.dormant_fraction(acts) == 0.25
    # for ReLU, the (n, c) spatial means kept by capture_activations give the same answers
    means = acts.mean(axis=(2, 3))
    np.testing.assert_allclose(D.dormant_scores(means), D.dormant_scores(acts), rtol=1e-12)
    assert D.dead_fraction(means, "relu") == D.dead_fraction(acts, "relu")


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: D.dead_fraction(np.zeros((0, 4)), "tanh"), "empty"),
        (lambda: D.dead_fraction(np.array([[0.1, np.nan]]), "tanh"), "NaN"),
        (lambda: D.dormant_fraction(np.array([[0.1, np.inf]])), "inf"),
        (lambda: D.dead_fraction(np.zeros(4), "relu"), "2-D"),
        (lambda: D.dead_fraction(np.zeros((2, 3, 4)), "relu"), "2-D"),
        (lambda: D.dead_fraction(np.zeros((2, 3)), "gelu"), "unknown activation"),
        (lambda: D.dead_fraction(np.array([["a", "b"]]), "relu"), "real numbers"),
        (lambda: D.hadamard_dead_fraction(np.zeros((2, 3)), np.zeros((2, 4)), "tanh"), "shapes differ"),
        (lambda: D.hadamard_dead_fraction(np.zeros((2, 3)), np.zeros((2, 3)), "elu"), "unknown"),
        (lambda: D.srank(np.eye(3), delta=0.0), "delta"),
        (lambda: D.srank(np.eye(3), delta=1.0), "delta"),
        (lambda: D.rank_metrics(np.eye(3), delta=-0.1), "delta"),
        (lambda: D.srank_from_singular_values([1.0, 0.5], delta=1.5), "delta"),
        (lambda: D.singular_values(np.zeros((3, 5))), "need at least as many samples as units"),
        (lambda: D.singular_values(np.zeros((3, 2, 2, 2))), "2-D"),
        (lambda: D.effective_rank(np.zeros((0, 0))), "empty"),
        (lambda: D.effective_rank_from_singular_values([1.0, -1.0]), ">= 0"),
        (lambda: D.dead_fraction(np.zeros((2, 3)), "relu", threshold=-1), "threshold"),
        (lambda: D.dormant_fraction(np.zeros((2, 3)), tau=float("nan")), "tau"),
        (lambda: D.layer_kinds(["conv1"], "swish"), "unknown activation"),
    ],
)
def test_bad_input_raises_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------------------------
# Whole networks
# ---------------------------------------------------------------------------------------------
def fake_activations(seed=0, n=64, d=16, saturated=3):
    """Layers as a Hadamard network's capture returns them: conv (n, c) means, then the branches."""
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
        "hadamard": a * b,
    }


def test_layer_kinds():
    kinds = D.layer_kinds(["conv1", "conv3", "hadamard_a", "representation"], "sigmoid")
    assert kinds == {"conv1": "relu", "conv3": "relu", "hadamard_a": "sigmoid", "representation": "sigmoid"}
    assert list(kinds) == ["conv1", "conv3", "hadamard_a", "representation"]


def test_compute_metrics_uses_branches_for_the_product_layer():
    acts = fake_activations()
    metrics = D.compute_metrics(acts, D.layer_kinds(list(acts), "tanh"))
    assert list(metrics) == list(acts)
    for values in metrics.values():
        assert set(values) == {"dead_fraction", "dormant_fraction", "srank", "effective_rank"}
    assert metrics["hadamard_a"]["dead_fraction"] == pytest.approx(3 / 16)
    assert metrics["hadamard_b"]["dead_fraction"] == pytest.approx(1 / 16)
    assert metrics["hadamard"]["dead_fraction"] == pytest.approx(1 / 16)  # only unit 0: both
    assert metrics["conv1"]["dead_fraction"] == pytest.approx(1 / 8)
    assert metrics["conv1"]["dormant_fraction"] == pytest.approx(1 / 8)
    assert metrics["conv1"]["srank"] <= 7  # the silent channel adds no direction
    # without the branches, "hadamard" is an ordinary tanh layer
    alone = {"hadamard": acts["hadamard"]}
    plain = D.compute_metrics(alone, {"hadamard": "tanh"})
    assert plain["hadamard"]["dead_fraction"] == D.dead_fraction(D.to_file_precision(acts["hadamard"]), "tanh")


def test_compute_metrics_product_differs_from_plain_formula():
    # both branches near zero: the product has no gradient although tanh' of it is ~1
    a = np.full((8, 4), 0.001, dtype=np.float32)
    a[:, 1:] = np.random.default_rng(5).uniform(-0.5, 0.5, (8, 3))
    acts = {"hadamard_a": a, "hadamard_b": a.copy(), "hadamard": a * a}
    metrics = D.compute_metrics(acts, D.layer_kinds(list(acts), "tanh"))
    assert metrics["hadamard"]["dead_fraction"] == 0.25
    assert D.dead_fraction(acts["hadamard"], "tanh") == 0.0


def test_compute_metrics_rounds_to_float16_and_checks_layers():
    acts = fake_activations(seed=1)
    kinds = D.layer_kinds(list(acts), "tanh")
    rounded = {k: v.astype(np.float16) for k, v in acts.items()}
    assert D.compute_metrics(acts, kinds) == D.compute_metrics(rounded, kinds)
    with pytest.raises(ValueError, match="kind"):
        D.compute_metrics(acts, {"conv1": "relu"})
    with pytest.raises(ValueError, match="representation"):
        D.compute_metrics({"representation": np.zeros((4, 8))}, {"representation": "tanh"})


def test_to_file_precision_clips_instead_of_overflowing():
    x = D.to_file_precision(np.array([[1e6, -1e6, 0.1]], dtype=np.float32))
    assert x.dtype == np.float16 and np.isfinite(x).all()
    assert x[0, 0] == np.finfo(np.float16).max
    with pytest.raises(ValueError, match="NaN or inf"):
        D.to_file_precision(np.array([[np.inf]], dtype=np.float32))


def test_save_load_round_trip_equals_live_metrics(tmp_path):
    acts = fake_activations(seed=2)
    save_dir = tmp_path / "run" / "activations"  # created on demand
    live = D.log_diagnostics(
        None, 1234, acts, "tanh", dead_threshold=0.03, dormant_tau=0.1, srank_delta=0.05, save_dir=str(save_dir)
    )
    assert os.listdir(save_dir) == ["step_1234.npz"]  # no temporary file left behind
    with np.load(save_dir / "step_1234.npz", allow_pickle=False) as data:
        assert all(data[k].dtype == np.float16 for k in acts)
    step, loaded, kinds, products = D.load_activations(str(save_dir / "step_1234.npz"))
    assert step == 1234
    assert list(loaded) == list(acts)
    assert kinds == D.layer_kinds(list(acts), "tanh")
    assert products == {"hadamard": ("hadamard_a", "hadamard_b")}
    for name, x in acts.items():
        assert loaded[name].shape == x.shape
        np.testing.assert_array_equal(loaded[name], x.astype(np.float16))
    offline = D.compute_metrics(loaded, kinds, products, dead_threshold=0.03, dormant_tau=0.1, srank_delta=0.05)
    assert offline == live


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    def disk_full(f, **arrays):
        f.write(b"PK partial")
        raise OSError("no space left on device")

    monkeypatch.setattr(np, "savez", disk_full)
    with pytest.raises(OSError, match="no space"):
        D.log_diagnostics(None, 7, fake_activations(), "tanh", save_dir=str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_load_rejects_corrupt_files(tmp_path):
    garbage = tmp_path / "step_1.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="step_1.npz"):
        D.load_activations(str(garbage))

    D.log_diagnostics(None, 2, fake_activations(), "relu", save_dir=str(tmp_path))
    whole = (tmp_path / "step_2.npz").read_bytes()
    truncated = tmp_path / "step_3.npz"
    truncated.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="step_3.npz"):
        D.load_activations(str(truncated))

    no_metadata = tmp_path / "step_4.npz"
    np.savez(no_metadata, conv1=np.zeros((4, 2), np.float16))
    with pytest.raises(ValueError, match="step_4.npz"):
        D.load_activations(str(no_metadata))

    with pytest.raises(ValueError, match="step_5.npz"):
        D.load_activations(str(tmp_path / "step_5.npz"))


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
        return {"conv1": c, "hadamard_a": a, "hadamard_b": b, "hadamard": a * b}


def test_capture_activations_chunks_and_reduces_conv():
    net = TinyNet()
    obs = torch.randn(7, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    captured = D.capture_activations(net, obs, chunk_size=3)
    assert net.grad_enabled == [False, False, False]  # three chunks, all without autograd
    assert list(captured) == ["conv1", "hadamard_a", "hadamard_b", "hadamard"]
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in captured.values())
    assert captured["conv1"].shape == (7, 3)
    assert captured["hadamard"].shape == (7, 5)
    with torch.no_grad():
        full = net.layer_outputs(obs)
    np.testing.assert_allclose(captured["conv1"], full["conv1"].mean(dim=(2, 3)).numpy(), atol=1e-6)
    np.testing.assert_allclose(captured["hadamard"], full["hadamard"].numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        D.capture_activations(net, obs[:0])


def test_log_diagnostics_writes_expected_tags(tmp_path):
    acts = fake_activations(seed=3)
    acts = {"conv1": acts["conv1"], "representation": acts["hadamard_a"]}
    writer = SummaryWriter(str(tmp_path))
    m10 = D.log_diagnostics(writer, 10, acts, "tanh")
    m20 = D.log_diagnostics(writer, 20, acts, "tanh")
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


def test_cli_reports_steps_skips_corrupt_file_and_writes_csv(tmp_path):
    run = tmp_path / "Breakout-v5__dqn__1__1700000000"
    acts = fake_activations(seed=4)
    # a non-default tau: the command line uses the thresholds stored in the files
    expected = {
        step: D.log_diagnostics(
            None,
            step,
            acts if step == 2000 else fake_activations(5),
            "tanh",
            dormant_tau=0.9,
            save_dir=str(run / "activations"),
        )
        for step in (2000, 300)
    }
    default_tau = D.compute_metrics(acts, D.layer_kinds(list(acts), "tanh"))
    assert default_tau["hadamard"]["dormant_fraction"] != expected[2000]["hadamard"]["dormant_fraction"]
    (run / "activations" / "step_1000.npz").write_bytes(b"\x00" * 64)
    out_csv = tmp_path / "metrics.csv"
    result = run_cli(run, "--csv", out_csv)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "step_1000.npz" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    lines = result.stdout.splitlines()
    assert run.name in lines[0]
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows] == ["300"] * 6 + ["2000"] * 6  # sorted numerically
    assert [r[1] for r in rows[:6]] == list(acts)
    srank_300 = expected[300]["hadamard"]["srank"]
    assert rows[5][:2] == ["300", "hadamard"] and int(rows[5][4]) == srank_300

    with open(out_csv, newline="") as f:
        records = list(csv.DictReader(f))
    assert len(records) == 12
    assert set(records[0]) == {"run", "step", "layer", "dead_fraction", "dormant_fraction", "srank", "effective_rank"}
    for r in records:
        values = expected[int(r["step"])][r["layer"]]
        assert r["run"] == run.name
        assert int(r["srank"]) == values["srank"]
        assert float(r["dead_fraction"]) == values["dead_fraction"]
        assert float(r["dormant_fraction"]) == values["dormant_fraction"]
        assert float(r["effective_rank"]) == values["effective_rank"]


def test_cli_missing_and_empty_folders(tmp_path):
    for folder in (tmp_path / "no_such_run", tmp_path):
        result = run_cli(folder)
        assert result.returncode != 0
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert str(folder) in result.stderr
        assert result.stdout == ""


def test_cli_runs_side_by_side_in_process(tmp_path, capsys):
    for name, steps in (("run_a", (10, 20)), ("run_b", (20,))):
        for step in steps:
            D.log_diagnostics(None, step, fake_activations(step), "relu", save_dir=str(tmp_path / name / "activations"))
    assert D.main([str(tmp_path / "run_a"), str(tmp_path / "run_b"), "--dormant-tau", "0.5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "run_a" in lines[0] and "run_b" in lines[0]
    assert lines[1].split() == ["step", "layer"] + ["dead", "dormant", "srank", "erank"] * 2
    step10 = [line.split() for line in lines[2:] if line.startswith("10 ")]
    step20 = [line.split() for line in lines[2:] if line.startswith("20 ")]
    assert len(step10) == len(step20) == 6
    assert all(len(r) == 2 + 4 for r in step10)  # run_b's cells are empty at step 10
    assert all(len(r) == 2 + 8 for r in step20)
    # the threshold given on the command line overrides the one stored in the file
    _, acts, kinds, products = D.load_activations(str(tmp_path / "run_a/activations/step_10.npz"))
    tau = D.compute_metrics(acts, kinds, products, dormant_tau=0.5)
    assert float(step10[0][3]) == pytest.approx(tau["conv1"]["dormant_fraction"], abs=1e-4)
    assert D.main([str(tmp_path / "run_a"), "--srank-delta", "2"]) != 0
