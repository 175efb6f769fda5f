"""Tests of pqn_atari_hadamard.py: Q(lambda) targets, the network, and the script end to end."""

import os
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)
torch.set_num_threads(1)

import script_runs  # noqa: E402

import pqn_atari_hadamard as pqn  # noqa: E402
import run_management  # noqa: E402

SCRIPT = os.path.join(REPO_ROOT, "pqn_atari_hadamard.py")


# ----------------------------------------------------------------------------------------------------------
# Q(lambda) targets
# ----------------------------------------------------------------------------------------------------------
def column(*values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype)


def test_q_lambda_by_hand_with_life_loss_game_over_and_truncation():
    gamma, lam = 0.9, 0.5
    # three envs side by side, four steps t = 0..3; max_q has the four cached values plus maxQ(s_4)
    # env 0: a life is lost at step 1 (the game goes on)
    # env 1: the game is over at step 1; step 2 is the NEXT_STEP reset step (no transition)
    # env 2: the game is truncated at step 1 (not terminal); step 2 is the reset step
    rewards = torch.stack([column(1, 0, 1), column(0, 1, 1), column(1, 0, 0), column(0, 2, 1)])
    terminals = torch.stack([column(0, 0, 0), column(1, 1, 0), column(0, 0, 0), column(0, 0, 0)])
    transitions = torch.stack([column(1, 1, 1), column(1, 1, 1), column(1, 0, 0), column(1, 1, 1)]).bool()
    max_q = torch.stack([column(10, 5, 1), column(20, 6, 2), column(30, 7, 3), column(40, 8, 4), column(50, 9, 5)])

    returns = pqn.q_lambda_returns(rewards, terminals, max_q, transitions, gamma, lam)

    # env 0: G3 = 0 + 0.9*50 = 45;  G2 = 1 + 0.9*(0.5*45 + 0.5*40) = 39.25;  G1 = 0 (life lost);
    #        G0 = 1 + 0.9*(0.5*0 + 0.5*20) = 10
    assert returns[:, 0].tolist() == pytest.approx([10.0, 0.0, 39.25, 45.0])
    # env 1: G3 = 2 + 0.9*9 = 10.1;  G1 = 1 (game over);  G0 = 0 + 0.9*(0.5*1 + 0.5*6) = 3.15
    assert returns[3, 1].item() == pytest.approx(10.1)
    assert returns[1, 1].item() == pytest.approx(1.0)
    assert returns[0, 1].item() == pytest.approx(3.15)
    # env 2: G3 = 1 + 0.9*5 = 5.5;  G1 bootstraps fully from the final obs: 1 + 0.9*3 = 3.7 (not from G2);
    #        G0 = 1 + 0.9*(0.5*3.7 + 0.5*2) = 3.565
    assert returns[3, 2].item() == pytest.approx(5.5)
    assert returns[1, 2].item() == pytest.approx(3.7)
    assert returns[0, 2].item() == pytest.approx(3.565)


def test_q_lambda_never_runs_across_a_forced_fire_step():
    """One env, five steps, the flags built from EpisodeTracker exactly as the training loop builds them: step 1
    loses a life, step 2 is the forced FIRE after it (no transition; its reward 7 is the game's, not learnt from)."""
    gamma, lam = 0.5, 0.5
    tracker = pqn.EpisodeTracker(1, np.array([3]), fire_action=1)
    no = np.zeros(1, dtype=bool)
    rewards, terminals, transitions = torch.zeros(5, 1), torch.zeros(5, 1), torch.zeros(5, 1, dtype=torch.bool)
    for t, (reward, lives) in enumerate(zip([1.0, 0.0, 7.0, 1.0, 0.0], [3, 2, 2, 2, 2])):
        transition, life_lost, _ = tracker.step(np.array([reward]), no, no, np.array([lives]))
        rewards[t], terminals[t], transitions[t] = float(np.sign(reward)), float(life_lost[0]), bool(transition[0])
    assert transitions[:, 0].tolist() == [True, True, False, True, True] and terminals[:, 0].tolist() == [0, 1, 0, 0, 0]
    max_q = torch.tensor([[10.0], [20.0], [30.0], [40.0], [50.0], [60.0]])
    returns = pqn.q_lambda_returns(rewards, terminals, max_q, transitions, gamma, lam)
    g4 = 0 + 0.5 * 60  # = 30
    g3 = 1 + 0.5 * (0.5 * g4 + 0.5 * 50)  # = 21
    g1 = 0.0  # lost life: no bootstrap
    g0 = 1 + 0.5 * (0.5 * g1 + 0.5 * 20)  # = 6
    assert [returns[t, 0].item() for t in (0, 1, 3, 4)] == pytest.approx([g0, g1, g3, g4])
    # nothing about the forced step reaches another step's target (its own is left out of the batch)
    rewards[2], max_q[2] = -1.0, -100.0
    again = pqn.q_lambda_returns(rewards, terminals, max_q, transitions, gamma, lam)
    assert [again[t, 0].item() for t in (0, 1, 3, 4)] == pytest.approx([g0, g1, g3, g4])


def test_q_lambda_without_episode_ends_is_the_reference_recursion():
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    terminals = torch.zeros(3, 1)
    max_q = torch.tensor([[0.0], [4.0], [5.0], [6.0]])
    returns = pqn.q_lambda_returns(rewards, terminals, max_q, torch.ones(3, 1, dtype=torch.bool), 0.5, 0.8)
    # G2 = 3 + 0.5*6 = 6;  G1 = 2 + 0.5*(0.8*6 + 0.2*5) = 4.9;  G0 = 1 + 0.5*(0.8*4.9 + 0.2*4) = 3.36
    assert returns[:, 0].tolist() == pytest.approx([3.36, 4.9, 6.0])


def test_q_lambda_zero_gives_one_step_targets():
    generator = torch.Generator().manual_seed(0)
    steps, envs = 6, 5
    rewards = torch.randn(steps, envs, generator=generator)
    terminals = (torch.rand(steps, envs, generator=generator) < 0.3).float()
    transitions = torch.rand(steps, envs, generator=generator) < 0.8
    max_q = torch.randn(steps + 1, envs, generator=generator)
    returns = pqn.q_lambda_returns(rewards, terminals, max_q, transitions, 0.99, 0.0)
    torch.testing.assert_close(returns, rewards + 0.99 * (1 - terminals) * max_q[1:])


def test_linear_schedule():
    assert pqn.linear_schedule(1.0, 0.001, 1000, 0) == pytest.approx(1.0)
    assert pqn.linear_schedule(1.0, 0.001, 1000, 500) == pytest.approx(0.5005)
    assert pqn.linear_schedule(1.0, 0.001, 1000, 5000) == pytest.approx(0.001)
    assert pqn.linear_schedule(1.0, 0.001, 0, 0) == pytest.approx(0.001)


def test_episode_tracker_adds_a_game_up_over_lives_and_skips_the_reset_step():
    tracker = pqn.EpisodeTracker(2, np.array([2, 2]))
    no = np.zeros(2, dtype=bool)
    # env 0 scores 3, loses a life, scores 4, loses its last life (game over); env 1 just plays
    steps = [
        (np.array([3.0, 1.0]), no, no, np.array([2, 2])),
        (np.array([0.0, 0.0]), no, no, np.array([1, 2])),
        (np.array([4.0, 0.0]), np.array([True, False]), no, np.array([0, 2])),
        (np.array([0.0, 0.0]), no, no, np.array([2, 2])),  # env 0's reset step
    ]
    results = [tracker.step(*s) for s in steps]
    assert results[1][1].tolist() == [True, False]  # life lost, game goes on
    assert results[2][2] == [(0, 7.0, 3)]  # raw full-game score over both lives, 3 agent steps
    assert results[3][0].tolist() == [False, True]  # the reset step is no transition
    assert results[3][1].tolist() == [False, False]  # lives going back up is no life lost


# ----------------------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------------------
def random_obs(n=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 4, 84, 84), dtype=torch.uint8, generator=generator)


def randomise_norms(network):
    """LayerNorm starts as the identity affine map; random weights make the formula checks meaningful."""
    torch.manual_seed(1)
    for module in network.modules():
        if isinstance(module, torch.nn.LayerNorm):
            torch.nn.init.normal_(module.weight, 1.0, 0.3)
            torch.nn.init.normal_(module.bias, 0.0, 0.3)


@pytest.mark.parametrize("hadamard", [True, False])
def test_forward_equals_the_formula(hadamard):
    torch.manual_seed(0)
    network = pqn.QNetwork(6, "tanh", hadamard, 64)
    randomise_norms(network)
    x = random_obs()

    def conv(x, layer, norm):
        y = F.conv2d(x, layer.weight, layer.bias, stride=layer.stride)
        # over the channels at each position, a scale and a shift per channel
        mean = y.mean(dim=1, keepdim=True)
        variance = y.var(dim=1, unbiased=False, keepdim=True)
        normalised = (y - mean) / torch.sqrt(variance + 1e-6)
        return torch.relu(normalised * norm.weight[:, None, None] + norm.bias[:, None, None])

    def branch(z, layer, norm):
        return torch.tanh(F.layer_norm(z @ layer.weight.T + layer.bias, (64,), norm.weight, norm.bias, eps=1e-6))

    h = conv(x.float() / 255, network.conv1, network.conv1_norm)
    h = conv(h, network.conv2, network.conv2_norm)
    z = conv(h, network.conv3, network.conv3_norm).reshape(len(x), -1)
    if hadamard:
        a = branch(z, network.hadamard_a, network.hadamard_a_norm)
        b = branch(z, network.hadamard_b, network.hadamard_b_norm)
        rep = a * b
    else:
        rep = branch(z, network.dense, network.dense_norm)
    expected = rep @ network.q_head.weight.T + network.q_head.bias
    with torch.no_grad():
        torch.testing.assert_close(network(x), expected, rtol=1e-4, atol=1e-5)


def test_layer_norm_comes_before_every_activation():
    torch.manual_seed(0)
    network = pqn.QNetwork(4, "tanh", True, 64)  # LayerNorm's default affine map is the identity
    pre = {}
    for name in ("conv1", "conv2", "conv3", "hadamard_a", "hadamard_b"):
        getattr(network, name).register_forward_hook(lambda m, i, o, name=name: pre.__setitem__(name, o))
    with torch.no_grad():
        outputs = network.layer_outputs(random_obs(8))
    assert list(outputs) == ["conv1", "conv2", "conv3", "hadamard_a", "hadamard_b", "representation"]
    for name in ("conv1", "conv2", "conv3"):
        # each conv output is normalised over its channels at each position (flax's LayerNorm on NHWC), then ReLU
        y = pre[name]
        mean = y.mean(dim=1, keepdim=True)
        variance = y.var(dim=1, unbiased=False, keepdim=True)
        normalised = (y - mean) / torch.sqrt(variance + 1e-6)
        torch.testing.assert_close(outputs[name], torch.relu(normalised), rtol=1e-4, atol=1e-5)
    for name in ("hadamard_a", "hadamard_b"):
        # each branch's pre-tanh is normalised per sample: atanh of the branch is mean 0, variance 1
        pre_tanh = torch.atanh(outputs[name].double().clamp(-1 + 1e-12, 1 - 1e-12))
        assert pre_tanh.mean(dim=1).abs().max() < 1e-3
        assert (pre_tanh.var(dim=1, unbiased=False) - 1).abs().max() < 1e-2
        # and it is the LayerNorm of that branch's own linear layer
        expected = torch.tanh(F.layer_norm(pre[name], (64,), eps=1e-6))
        torch.testing.assert_close(outputs[name], expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outputs["representation"], outputs["hadamard_a"] * outputs["hadamard_b"])


def test_gradients_reach_both_branches_and_their_norms():
    torch.manual_seed(0)
    network = pqn.QNetwork(4, "tanh", True, 32)
    network(random_obs(4)).square().sum().backward()
    for name in ("hadamard_a", "hadamard_b", "hadamard_a_norm", "hadamard_b_norm", "conv1", "conv1_norm"):
        grad = getattr(network, name).weight.grad
        assert grad is not None and grad.abs().sum() > 0, name


def test_parameter_counts_of_the_variants():
    def count(module):
        return sum(p.numel() for p in module.parameters())

    actions = 4
    # each conv (weights + biases) and its LayerNorm (a scale and a shift per channel)
    convs = (4 * 32 * 8 * 8 + 32) + 2 * 32
    convs += (32 * 64 * 4 * 4 + 64) + 2 * 64
    convs += (64 * 64 * 3 * 3 + 64) + 2 * 64
    dense_512 = 3136 * 512 + 512 + 2 * 512  # linear + its LayerNorm
    assert count(pqn.QNetwork(actions, "tanh", True, 512)) == convs + 2 * dense_512 + 512 * actions + actions
    assert count(pqn.QNetwork(actions, "tanh", False, 512)) == convs + dense_512 + 512 * actions + actions
    baseline = pqn.QNetwork(actions, "tanh", False, 1024)
    assert count(baseline) == convs + 3136 * 1024 + 1024 + 2 * 1024 + 1024 * actions + actions
    # the Hadamard layer and the 1024-wide plain layer have the same number of parameters (norms included)
    hadamard = pqn.QNetwork(actions, "tanh", True, 512)
    assert count(hadamard) - count(hadamard.q_head) == count(baseline) - count(baseline.q_head)
    assert (count(hadamard), count(baseline)) == (3_294_692, 3_296_740)  # Breakout: the figures of docs/pqn.md


def test_layer_norm_shapes():
    for hadamard, hidden_dim in ((True, 512), (False, 1024)):
        network = pqn.QNetwork(4, "tanh", hadamard, hidden_dim)
        norms = {name: module for name, module in network.named_modules() if isinstance(module, torch.nn.LayerNorm)}
        expected = {"conv1_norm": 32, "conv2_norm": 64, "conv3_norm": 64}
        expected.update({"hadamard_a_norm": 512, "hadamard_b_norm": 512} if hadamard else {"dense_norm": 1024})
        assert {name: norm.normalized_shape for name, norm in norms.items()} == {
            name: (size,) for name, size in expected.items()
        }
        for norm in norms.values():  # a learnt scale and shift per channel (per unit), flax's epsilon
            assert norm.elementwise_affine and norm.weight.shape == norm.bias.shape == norm.normalized_shape
            assert norm.eps == 1e-6


def test_initial_weights_are_he_normal_with_a_lecun_normal_head_and_zero_biases():
    torch.manual_seed(0)
    network = pqn.QNetwork(18, "tanh", True, 512)
    he_normal = ("conv1", "conv2", "conv3", "hadamard_a", "hadamard_b")
    for name, layer in [(name, getattr(network, name)) for name in he_normal] + [("q_head", network.q_head)]:
        fan_in = layer.weight[0].numel()
        gain = 1.0 if name == "q_head" else 2.0
        std = layer.weight.std().item()
        assert abs(std / (gain / fan_in) ** 0.5 - 1) < 0.1, (name, std)
        # flax's truncated normal: nothing beyond two standard deviations of the underlying normal
        assert layer.weight.abs().max().item() <= 2 * (gain / fan_in) ** 0.5 / 0.8796 + 1e-6, name
        assert (layer.bias == 0).all(), name
    plain = pqn.QNetwork(18, "tanh", False, 1024)
    assert abs(plain.dense.weight.std().item() / (2 / 3136) ** 0.5 - 1) < 0.1 and (plain.dense.bias == 0).all()


def test_relu_without_hadamard_is_pqns_plain_network():
    network = pqn.QNetwork(4, "relu", False, 512)
    with torch.no_grad():
        outputs = network.layer_outputs(random_obs(2))
    assert list(outputs) == ["conv1", "conv2", "conv3", "representation"]
    assert (outputs["representation"] >= 0).all() and (outputs["representation"] == 0).any()


# ----------------------------------------------------------------------------------------------------------
# Argument checks (in process) and the script end to end (subprocesses)
# ----------------------------------------------------------------------------------------------------------
def test_check_args_accepts_the_defaults():
    run_management.check_args(pqn.Args(), pqn.SCRIPT)


SMOKE = [
    "--env-id", "Pong-v5",  # an untrained agent's Pong game is short, so the evaluation is quick
    "--num-envs", "4", "--num-steps", "16", "--num-minibatches", "4", "--total-timesteps", "256",
    "--hidden-dim", "32", "--diagnostics-samples", "64", "--diagnostics-interval", "64",
    "--save-activations", "--save-model", "--eval-episodes", "1", "--capture-video",  # its video: tests/test_videos.py
]  # fmt: skip


def run_script(cwd, *arguments, timeout=120):
    return script_runs.run_script(SCRIPT, cwd, arguments, timeout)


def scalars(run_dir):
    return script_runs.read_scalars(run_dir)[0]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The smoke command run twice with the same seed, each in its own folder."""
    runs = []
    for name in ("first", "second"):
        cwd = tmp_path_factory.mktemp(name)
        result = run_script(cwd, *SMOKE)
        assert result.returncode == 0, result.stderr[-3000:]
        (run_dir,) = (cwd / "runs").iterdir()
        runs.append(run_dir)
    return runs


def test_smoke_run_writes_tags_activations_and_checkpoint(two_runs):
    run_dir = two_runs[0]
    tags = scalars(str(run_dir))
    for tag in ("losses/td_loss", "losses/q_values", "charts/epsilon", "charts/SPS", "charts/learning_rate"):
        assert [step for step, _ in tags[tag]] == [64, 128, 192, 256], tag
    assert len(tags["eval/episodic_return"]) == 1
    assert os.listdir(run_dir / "videos") == ["step_256_game_1.mp4"]
    for layer in ("conv1", "conv2", "conv3", "hadamard_a", "hadamard_b", "representation"):
        for metric in ("dead_fraction", "dormant_fraction", "srank", "effective_rank"):
            assert f"diagnostics/{metric}/{layer}" in tags
    # epsilon goes from 1 to 0.001 over the first 10% of the steps (25.6), so it is at 0.001 already
    assert tags["charts/epsilon"][0][1] == pytest.approx(0.001)
    files = sorted(os.listdir(run_dir / "activations"))
    assert files == ["step_128.npz", "step_192.npz", "step_256.npz", "step_64.npz"]
    with np.load(run_dir / "activations" / "step_64.npz") as saved:
        assert saved["representation"].shape == (64, 32) and saved["representation"].dtype == np.float16
    state = torch.load(run_dir / "pqn_atari_hadamard.pt", weights_only=True)
    assert state["q_head.weight"].shape == (6, 32)  # Pong has 6 actions


def test_same_seed_gives_the_same_losses(two_runs):
    first, second = (scalars(str(run_dir)) for run_dir in two_runs)
    for tag in ("losses/td_loss", "losses/q_values", "eval/episodic_return"):
        assert first[tag] == second[tag], tag
    assert all(np.isfinite(value) for _, value in first["losses/td_loss"])


def test_an_existing_run_folder_is_not_overwritten(tmp_path):
    now = int(time.time())
    for t in range(now - 1, now + 60):  # every folder name the run could pick in the next minute
        (tmp_path / "runs" / f"Breakout-v5__pqn_atari_hadamard__1__{t}").mkdir(parents=True)
    result = run_script(tmp_path, "--total-timesteps", "4096")
    assert result.returncode != 0
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: runs/Breakout-v5__pqn_atari_hadamard__1__") and "exists already" in line
    assert all(not os.listdir(d) for d in (tmp_path / "runs").iterdir())
