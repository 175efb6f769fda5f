"""Tests of ppo_atari_hadamard.py: GAE by hand, the actor-critic network, and the script end to end."""

import glob
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
from script_runs import read_scalars  # noqa: E402

from ppo_atari_hadamard import Agent, EpisodeTracker, compute_gae  # noqa: E402

SCRIPT = os.path.join(REPO_ROOT, "ppo_atari_hadamard.py")
TINY_ARGS = [
    "--num-envs",
    "2",
    "--num-steps",
    "32",
    "--total-timesteps",
    "256",
    "--hidden-dim",
    "32",
    "--diagnostics-samples",
    "64",
    "--diagnostics-interval",
    "64",
    "--no-cuda",
]
# diagnostics every 100 steps of rollouts of 64: the rollouts that pass a multiple of 100 capture, at 128 and 256
SMOKE_ARGS = TINY_ARGS + ["--save-activations", "--save-model", "--eval-episodes", "1", "--diagnostics-interval", "100"]
SMOKE_ARGS += ["--capture-video"]  # its video: tests/test_videos.py


# ---------------------------------------------------------------------------------------------------------
# GAE
# ---------------------------------------------------------------------------------------------------------
def gae_rollout():
    """Two envs, eight steps, gamma = lambda = 0.5 (so gamma * lambda = 0.25).

    env 0: step 1 loses a life, step 3 ends the game, step 4 is the reset step, step 6 is cut by the time limit
           (its next observation, obs[7], is the game's final one: values[0, 7] = 8 is its value), step 7 resets.
    env 1: nothing happens until the time limit cuts the game at the last step; next_value = 4 is the value of
           that final observation.
    """
    rewards = torch.tensor([[1, 0, 1, 1, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.float32).T
    values = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.float32).T
    next_value = torch.tensor([9.0, 4.0])
    terminals = torch.tensor([[0, 1, 0, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0]], dtype=torch.float32).T
    truncated = torch.tensor([[0, 0, 0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 0, 0, 1]], dtype=torch.float32).T
    transitions = torch.tensor([[1, 1, 1, 1, 0, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1, 1]], dtype=torch.float32).T
    return rewards, values, next_value, terminals, truncated, transitions


def test_gae_against_hand_computed_values():
    rewards, values, next_value, terminals, truncated, transitions = gae_rollout()
    advantages, returns = compute_gae(rewards, values, next_value, terminals, transitions, 0.5, 0.5)
    # env 0, backwards. delta[t] = r[t] + 0.5 * (1 - terminal[t]) * V(obs[t+1]) - V(obs[t])
    a7 = 0.0  # reset step: no transition
    a6 = 1 + 0.5 * 8 - 7  # truncated: bootstraps from the final observation's value 8; recursion cut = -2
    a5 = (0 + 0.5 * 7 - 6) + 0.25 * a6  # = -2.5 - 0.5 = -3
    a4 = 0.0  # reset step
    a3 = 1 - 4  # game over: no bootstrap, recursion cut = -3
    a2 = (1 + 0.5 * 4 - 3) + 0.25 * a3  # = 0 - 0.75 = -0.75
    a1 = 0 - 2  # lost life: no bootstrap, recursion cut = -2
    a0 = (1 + 0.5 * 2 - 1) + 0.25 * a1  # = 1 - 0.5 = 0.5
    expected_env0 = [a0, a1, a2, a3, a4, a5, a6, a7]
    # env 1: the last step bootstraps from next_value = 4: delta[7] = 0 + 0.5 * 4 - 0 = 2, the others are 0
    expected_env1 = [2 * 0.25**7, 2 * 0.25**6, 2 * 0.25**5, 2 * 0.25**4, 2 * 0.25**3, 2 * 0.25**2, 2 * 0.25, 2]
    expected = torch.tensor([expected_env0, expected_env1]).T
    torch.testing.assert_close(advantages, expected)
    torch.testing.assert_close(returns, expected + values)


def test_gae_ignores_what_happens_on_a_reset_step():
    rewards, values, next_value, terminals, truncated, transitions = gae_rollout()
    before, _ = compute_gae(rewards, values, next_value, terminals, transitions, 0.99, 0.95)
    rewards[4, 0] = 100.0  # whatever a reset step reports is no transition
    terminals[4, 0] = 1.0
    values[4, 0] = -50.0  # the value of a game-over's final observation is never a bootstrap
    after, _ = compute_gae(rewards, values, next_value, terminals, transitions, 0.99, 0.95)
    torch.testing.assert_close(after, before)


def forced_fire_rollout():
    """One env, five steps, the flags built from EpisodeTracker exactly as the training loop builds them.

    Step 1 loses a life; step 2 is the forced FIRE after it (no transition: its reward 7 is the game's, not the
    agent's); steps 3 and 4 are the agent's again. values[t] = t + 1, next_value = 6.
    """
    tracker = EpisodeTracker(1, np.array([3]), fire_action=1)
    raw_rewards, lives = [1.0, 0.0, 7.0, 1.0, 0.0], [3, 2, 2, 2, 2]
    rewards, terminals, truncated, transitions = (torch.zeros(5, 1) for _ in range(4))
    no = np.zeros(1, dtype=bool)
    for t in range(5):
        forced = tracker.forced_fire[0]
        is_transition, life_lost, _ = tracker.step(np.array([raw_rewards[t]]), no, no, np.array([lives[t]]))
        assert forced == (t == 2)
        rewards[t] = float(np.sign(raw_rewards[t]))
        terminals[t] = float(is_transition[0] and life_lost[0])
        truncated[t] = 0.0
        transitions[t] = float(is_transition[0])
    values = torch.arange(1.0, 6.0)[:, None]
    return rewards, values, torch.tensor([6.0]), terminals, truncated, transitions


def test_gae_never_runs_across_a_forced_fire_step():
    rewards, values, next_value, terminals, truncated, transitions = forced_fire_rollout()
    assert transitions[:, 0].tolist() == [1, 1, 0, 1, 1] and terminals[:, 0].tolist() == [0, 1, 0, 0, 0]
    advantages, _ = compute_gae(rewards, values, next_value, terminals, transitions, 0.5, 0.5)
    a4 = 0 + 0.5 * 6 - 5  # = -2
    a3 = (1 + 0.5 * 5 - 4) + 0.25 * a4  # = -1
    a2 = 0.0  # the forced FIRE: no advantage (and out of the loss)
    a1 = 0 - 2  # lost life: no bootstrap, the recursion is cut = -2
    a0 = (1 + 0.5 * 2 - 1) + 0.25 * a1  # = 0.5
    torch.testing.assert_close(advantages, torch.tensor([[a0], [a1], [a2], [a3], [a4]]))
    # nothing about the forced step reaches another step's advantage
    rewards[2], values[2] = -1.0, 100.0
    again, _ = compute_gae(rewards, values, next_value, terminals, transitions, 0.5, 0.5)
    torch.testing.assert_close(again, advantages)


def test_gae_without_episode_ends_is_the_usual_recursion():
    gamma, lam = 0.9, 0.8
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [1.5]])
    zeros, ones = torch.zeros(3, 1), torch.ones(3, 1)
    advantages, _ = compute_gae(rewards, values, torch.tensor([2.0]), zeros, ones, gamma, lam)
    d2 = 3 + 0.9 * 2.0 - 1.5
    d1 = 2 + 0.9 * 1.5 - 1.0
    d0 = 1 + 0.9 * 1.0 - 0.5
    expected = [[d0 + 0.72 * d1 + 0.72**2 * d2], [d1 + 0.72 * d2], [d2]]
    torch.testing.assert_close(advantages, torch.tensor(expected))


# ---------------------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------------------
def probe_batch(n=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 4, 84, 84), dtype=torch.uint8, generator=generator)


def conv_features(agent, x):
    x = x.float() / 255.0
    return F.relu(agent.conv3(F.relu(agent.conv2(F.relu(agent.conv1(x)))))).flatten(1)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "relu"])
def test_forward_is_the_formula(activation):
    torch.manual_seed(0)
    act = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "relu": torch.relu}[activation]
    x = probe_batch()
    for hadamard in (True, False):
        agent = Agent(6, activation, hadamard, 64)
        z = conv_features(agent, x)
        if hadamard:
            h = act(z @ agent.hadamard_a.weight.T + agent.hadamard_a.bias) * act(
                z @ agent.hadamard_b.weight.T + agent.hadamard_b.bias
            )
        else:
            h = act(z @ agent.dense.weight.T + agent.dense.bias)
        torch.testing.assert_close(agent.representation(x), h)
        actions = torch.tensor([0, 1, 2, 3, 4, 5])
        _, logprob, entropy, value = agent.get_action_and_value(x, actions)
        logits = h @ agent.actor.weight.T + agent.actor.bias
        log_p = torch.log_softmax(logits, dim=1)
        torch.testing.assert_close(logprob, log_p[torch.arange(6), actions])
        torch.testing.assert_close(entropy, -(log_p.exp() * log_p).sum(1))
        torch.testing.assert_close(value, h @ agent.critic.weight.T + agent.critic.bias)
        torch.testing.assert_close(agent.get_value(x), value)
        layers = list(agent.layer_outputs(x))
        rep = ["hadamard_a", "hadamard_b", "representation"] if hadamard else ["representation"]
        assert layers == ["conv1", "conv2", "conv3"] + rep


def test_sampled_actions_are_valid_and_follow_the_policy():
    torch.manual_seed(0)
    agent = Agent(4)
    with torch.no_grad():
        agent.actor.weight.zero_()
        agent.actor.bias.copy_(torch.tensor([0.0, 0.0, 5.0, 0.0]))  # action 2 has probability ~0.98
        action, logprob, _, value = agent.get_action_and_value(probe_batch(200))
    assert action.shape == (200,) and value.shape == (200, 1)
    assert action.min() >= 0 and action.max() <= 3
    assert (action == 2).float().mean() > 0.9
    chosen = logprob[action == 2]
    torch.testing.assert_close(chosen, torch.full_like(chosen, np.log(np.exp(5) / (np.exp(5) + 3))))


def test_gradients_reach_both_branches_and_the_heads():
    torch.manual_seed(0)
    agent = Agent(4, "tanh", True, 64)
    x = probe_batch()
    _, logprob, entropy, value = agent.get_action_and_value(x, torch.tensor([0, 1, 2, 3, 0, 1]))
    (logprob.sum() + entropy.sum() + value.sum()).backward()
    for name in ["hadamard_a", "hadamard_b", "actor", "critic", "conv1"]:
        grad = getattr(agent, name).weight.grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    # the product rule: d(a*b)/dW_a is the plain branch gradient weighted by b
    agent.zero_grad()
    z = conv_features(agent, x).detach()
    b = torch.tanh(agent.hadamard_b(z)).detach()
    (torch.tanh(agent.hadamard_a(z)) * b).sum().backward()
    expected = ((1 - torch.tanh(agent.hadamard_a(z)) ** 2) * b).T @ z
    torch.testing.assert_close(agent.hadamard_a.weight.grad, expected.detach(), rtol=1e-4, atol=1e-5)


def test_orthogonal_init_scales():
    torch.manual_seed(0)
    agent = Agent(6)

    def gram(layer):
        w = layer.weight.detach().flatten(1)
        return w @ w.T

    for name in ["conv1", "conv2", "conv3", "hadamard_a", "hadamard_b"]:
        layer = getattr(agent, name)
        rows = layer.weight.shape[0]
        torch.testing.assert_close(gram(layer), 2.0 * torch.eye(rows), atol=1e-4, rtol=0)  # gain sqrt(2)
    torch.testing.assert_close(gram(agent.actor), 1e-4 * torch.eye(6), atol=1e-8, rtol=0)  # gain 0.01
    assert 0.0003 < agent.actor.weight.std() < 0.0006  # 0.01 / sqrt(512) = 0.00044
    torch.testing.assert_close(gram(agent.critic), torch.ones(1, 1), atol=1e-5, rtol=0)  # gain 1
    for layer in [agent.conv1, agent.conv2, agent.conv3, agent.hadamard_a, agent.hadamard_b, agent.actor, agent.critic]:
        assert (layer.bias == 0).all()
    assert not torch.equal(agent.hadamard_a.weight, agent.hadamard_b.weight)  # independently parameterised
    plain = Agent(6, "tanh", False)
    torch.testing.assert_close(gram(plain.dense), 2.0 * torch.eye(512), atol=1e-4, rtol=0)


def test_parameter_counts():
    def count(module):
        return sum(p.numel() for p in module.parameters())

    convs = (4 * 32 * 8 * 8 + 32) + (32 * 64 * 4 * 4 + 64) + (64 * 64 * 3 * 3 + 64)
    hadamard = Agent(4)  # default: tanh, Hadamard, 512 units
    assert count(hadamard) == convs + 2 * (3136 * 512 + 512) + (512 * 4 + 4) + (512 + 1)
    nature = Agent(4, "relu", False)
    assert count(nature) == convs + (3136 * 512 + 512) + (512 * 4 + 4) + (512 + 1)
    matched = Agent(4, "tanh", False, 1024)
    assert count(matched) == convs + (3136 * 1024 + 1024) + (1024 * 4 + 4) + (1024 + 1)
    # the representation of the parameter-matched baseline has exactly as many parameters as the Hadamard one
    assert count(matched.dense) == count(hadamard.hadamard_a) + count(hadamard.hadamard_b) == 3_212_288


# ---------------------------------------------------------------------------------------------------------
# The script end to end
# ---------------------------------------------------------------------------------------------------------
def run_script(cwd, args, timeout=240):
    return script_runs.run_script(SCRIPT, cwd, args, timeout)


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """The tiny run twice with the same seed, each in its own folder."""
    runs = []
    for name in ("first", "second"):
        cwd = tmp_path_factory.mktemp(name)
        result = run_script(cwd, SMOKE_ARGS)
        assert result.returncode == 0, result.stderr[-3000:]
        (run_dir,) = glob.glob(os.path.join(cwd, "runs", "*"))
        runs.append(run_dir)
    return runs


def test_smoke_run_writes_tags_activations_and_checkpoint(smoke_runs):
    run_dir = smoke_runs[0]
    scalars, histograms = read_scalars(run_dir)
    losses = ["value_loss", "policy_loss", "entropy", "old_approx_kl", "approx_kl", "clipfrac", "explained_variance"]
    for tag in [f"losses/{name}" for name in losses] + ["charts/SPS", "charts/learning_rate"]:
        assert [step for step, _ in scalars[tag]] == [64, 128, 192, 256], tag
    layers = ["conv1", "conv2", "conv3", "hadamard_a", "hadamard_b", "representation"]
    for layer in layers:
        for metric in ["dead_fraction", "dormant_fraction", "srank", "effective_rank"]:
            assert [step for step, _ in scalars[f"diagnostics/{metric}/{layer}"]] == [128, 256]
        assert f"activations/{layer}" in histograms
    # the learning rate anneals linearly from 2.5e-4 over the 4 iterations
    np.testing.assert_allclose([v for _, v in scalars["charts/learning_rate"]], [2.5e-4, 1.875e-4, 1.25e-4, 0.625e-4])
    # 2 envs x 32 steps of a near-uniform policy over Breakout's 4 actions
    assert abs(scalars["losses/entropy"][0][1] - np.log(4)) < 0.01
    assert len(scalars["eval/episodic_return"]) == 1
    assert os.listdir(os.path.join(run_dir, "videos")) == ["step_256_game_1.mp4"]
    files = sorted(os.listdir(os.path.join(run_dir, "activations")))
    assert files == ["step_128.npz", "step_256.npz"]
    with np.load(os.path.join(run_dir, "activations", "step_128.npz")) as saved:
        assert saved["representation"].shape == (64, 32) and saved["conv3"].shape[0] == 64
    state = torch.load(os.path.join(run_dir, "ppo_atari_hadamard.pt"), weights_only=True)
    agent = Agent(4, "tanh", True, 32)
    agent.load_state_dict(state)


def test_same_seed_gives_identical_losses(smoke_runs):
    first, _ = read_scalars(smoke_runs[0])
    second, _ = read_scalars(smoke_runs[1])
    loss_tags = [tag for tag in first if tag.startswith("losses/")]
    assert len(loss_tags) == 7
    for tag in loss_tags:
        assert first[tag] == second[tag], tag


def test_plain_relu_network_runs(tmp_path):
    result = run_script(tmp_path, ["--activation", "relu", "--no-hadamard", *TINY_ARGS])
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = glob.glob(os.path.join(tmp_path, "runs", "*"))
    scalars, _ = read_scalars(run_dir)
    assert "diagnostics/dead_fraction/representation" in scalars
    assert not any("hadamard" in tag for tag in scalars)


def test_an_existing_run_folder_is_not_overwritten(tmp_path):
    now = int(time.time())
    for t in range(now - 1, now + 120):  # the folder the run will want, whenever it starts
        (tmp_path / "runs" / f"Breakout-v5__clash__1__{t}").mkdir(parents=True)
    result = run_script(tmp_path, ["--exp-name", "clash"], timeout=60)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "exists already" in lines[0], result.stderr
    assert all(not os.listdir(folder) for folder in (tmp_path / "runs").iterdir())
