"""Tests of dqn_atari_hadamard.py: the replay memory against the real game, the network, and whole runs."""

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

import dqn_atari_hadamard as dqn  # noqa: E402
import run_management  # noqa: E402

SCRIPT = os.path.join(REPO_ROOT, "dqn_atari_hadamard.py")


# ---------------------------------------------------------------------------------------------------------
# The replay memory against the real environment
# ---------------------------------------------------------------------------------------------------------


def test_replay_buffer_returns_exactly_the_stacks_the_env_gave():
    """Random Breakout through a small circular buffer: every stored (obs, next_obs) is what the env returned.

    The agent never presses FIRE itself: the forced FIRE after each lost life serves the ball. Its frame is stored
    (the stacks after it need it), but no transition starts on it.
    """
    capacity = 300
    envs = dqn.make_env("Breakout-v5", 1, max_episode_frames=800)  # ~190 steps: some games time out
    frames, info = envs.reset(seed=3)
    obs = np.repeat(frames, 4, axis=1)
    tracker = dqn.EpisodeTracker(1, info["lives"], dqn.find_fire_action(envs))
    rb = dqn.ReplayBuffer(capacity, seed=0)
    rng = np.random.default_rng(0)
    stored = {}  # slot -> what the env gave for the transition last stored there
    ends = []  # game_over flag of every stored transition, in order
    seen = {"life_lost_mid_game": 0, "terminated": 0, "truncated": 0, "rewards": 0, "checks": 0, "forced": 0}
    forced_slots = set()

    def check_everything_stored():
        slots = np.flatnonzero(rb.is_transition)
        assert len(slots) == len(rb) > 0
        got = dqn.Transitions(*(field.numpy() for field in rb.get(slots)))
        want_obs = np.stack([stored[s][0] for s in slots])
        want_next = np.stack([stored[s][3] for s in slots])
        assert np.array_equal(got.obs, want_obs), f"wrong obs at slots {slots[(got.obs != want_obs).any((1, 2, 3))]}"
        assert np.array_equal(got.next_obs, want_next), "wrong next_obs at slots " + str(
            slots[(got.next_obs != want_next).any((1, 2, 3))]
        )
        np.testing.assert_array_equal(got.actions, [stored[s][1] for s in slots])
        np.testing.assert_array_equal(got.rewards, [stored[s][2] for s in slots])
        np.testing.assert_array_equal(got.terminals, [stored[s][4] for s in slots])
        # sampling draws only stored transitions, never one that starts on a forced FIRE's frame
        sampled = rb.sample_slots(256)
        assert rb.is_transition[sampled].all() and not forced_slots & set(sampled.tolist())
        if len(ends) >= capacity:  # full: only games' final frames, forced FIRE frames, the newest and 3 oldest
            assert len(rb) >= capacity - 4 - sum(ends[-capacity:]) - len(forced_slots)
        seen["checks"] += 1

    for step in range(1500):
        actions = rng.choice([0, 2, 3], 1)  # NOOP, RIGHT, LEFT
        resetting = tracker.resetting[0]
        frames, rewards, terminations, truncations, info = envs.step(tracker.with_forced_fire(actions))
        is_transition, life_lost, _ = tracker.step(rewards, terminations, truncations, info["lives"])
        next_obs = dqn.stack_frames(obs, frames, ~is_transition)
        game_over = bool(terminations[0] or truncations[0])
        if not resetting and not is_transition[0]:  # a forced FIRE, stored as the training loop stores it
            slot = rb.add(obs[0], next_obs[0], actions[0], rewards[0], False, game_over, is_transition=False)
            forced_slots.add(slot)
            seen["forced"] += 1
            assert not rb.is_transition[slot]
        if is_transition[0]:
            terminal = bool(terminations[0] or life_lost[0])
            slot = rb.add(obs[0], next_obs[0], actions[0], rewards[0], terminal, game_over)
            forced_slots.discard(slot)
            stored[slot] = (obs[0].copy(), actions[0], np.sign(rewards[0]), next_obs[0].copy(), terminal)
            ends.append(game_over)
            seen["life_lost_mid_game"] += bool(life_lost[0] and not game_over)
            seen["terminated"] += bool(terminations[0])
            seen["truncated"] += bool(truncations[0] and not terminations[0])
            seen["rewards"] += bool(rewards[0] != 0)
            if game_over or step % 37 == 0:
                check_everything_stored()
        obs = next_obs
    check_everything_stored()
    envs.close()
    # the play went through what the buffer must get right
    assert seen["life_lost_mid_game"] >= 5 and seen["terminated"] >= 1 and seen["truncated"] >= 1
    assert seen["rewards"] >= 1 and len(ends) > 4 * capacity and seen["checks"] > 40 and seen["forced"] >= 5


def test_replay_buffer_sample_is_vectorised_and_shaped():
    rb = dqn.ReplayBuffer(50, seed=0)
    frames = np.arange(1, 31, dtype=np.uint8)
    obs = np.full((4, 84, 84), frames[0], np.uint8)  # a reset obs: four copies of the game's first frame
    for t in range(1, 30):  # one game of 29 steps; frame k is filled with the value k + 1
        next_obs = np.concatenate([obs[1:], np.full((1, 84, 84), frames[t], np.uint8)])
        rb.add(obs, next_obs, t % 4, -3.0 if t == 5 else 0.0, terminal=t == 29, game_over=t == 29)
        obs = next_obs
    batch = rb.sample(64)
    assert batch.obs.shape == batch.next_obs.shape == (64, 4, 84, 84) and batch.obs.dtype == torch.uint8
    assert batch.actions.dtype == torch.int64 and batch.rewards.dtype == batch.terminals.dtype == torch.float32
    # the newest frame of next_obs is the one after obs's newest; the first slots' stacks repeat the first frame
    np.testing.assert_array_equal(batch.next_obs[:, -1, 0, 0], batch.obs[:, -1, 0, 0] + 1)
    first = rb.get(np.array([0]))
    np.testing.assert_array_equal(first.obs[0, :, 0, 0], [1, 1, 1, 1])
    np.testing.assert_array_equal(first.next_obs[0, :, 0, 0], [1, 1, 1, 2])
    third = rb.get(np.array([2]))
    np.testing.assert_array_equal(third.obs[0, :, 0, 0], [1, 1, 2, 3])
    np.testing.assert_array_equal(third.next_obs[0, :, 0, 0], [1, 2, 3, 4])
    assert rb.get(np.array([4])).rewards[0] == -1.0  # stored clipped to its sign
    assert len(rb) == 29 and not rb.is_transition[29]  # the game's final frame starts no transition
    with pytest.raises(ValueError, match="reset obs"):  # a new game must start from a reset obs
        rb.add(obs, obs, 0, 0.0, terminal=False, game_over=False)


def test_replay_buffer_memory_is_one_frame_per_transition():
    rb = dqn.ReplayBuffer(10_000)
    per_transition = sum(getattr(rb, name).nbytes for name in rb.ARRAYS) / rb.capacity
    assert 84 * 84 < per_transition <= 84 * 84 + 16
    assert per_transition * 1_000_000 <= 7.5e9


def test_full_game_returns_add_up_over_lives():
    envs = dqn.make_env("Breakout-v5", 1)
    obs, info = envs.reset(seed=5)
    tracker = dqn.EpisodeTracker(1, info["lives"])
    rng = np.random.default_rng(5)
    score, length, lives_scoring, games = 0.0, 0, set(), []
    while len(games) < 3:
        _, rewards, terminations, truncations, info = envs.step(rng.integers(0, 4, 1))
        is_transition, life_lost, finished = tracker.step(rewards, terminations, truncations, info["lives"])
        if not is_transition[0]:
            assert info["lives"][0] == 5 and not finished  # the reset step starts a new game, counts nothing
            continue
        score += rewards[0]
        length += 1
        if rewards[0]:
            lives_scoring.add((len(games), int(info["lives"][0])))
        if finished:
            assert info["lives"][0] == 0 and terminations[0]  # Breakout ends when the last life is lost
            games.append((score, length))
            assert finished == [(0, score, length)]
            score, length = 0.0, 0
        else:
            assert not terminations[0]  # a lost life does not end the game
    envs.close()
    # some game scored in more than one of its lives, so its return really is a sum over lives
    assert any(len({life for g, life in lives_scoring if g == game}) > 1 for game in range(3))


# ---------------------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------------------


def _conv_features(net, x):
    z = F.relu(F.conv2d(x.float() / 255.0, net.conv1.weight, net.conv1.bias, stride=4))
    z = F.relu(F.conv2d(z, net.conv2.weight, net.conv2.bias, stride=2))
    return F.relu(F.conv2d(z, net.conv3.weight, net.conv3.bias, stride=1)).flatten(1)


def test_forward_equals_the_formula():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (3, 4, 84, 84), dtype=torch.uint8)
    net = dqn.QNetwork(6, "tanh", hadamard=True, hidden_dim=16)
    z = _conv_features(net, x)
    h = torch.tanh(z @ net.hadamard_a.weight.T + net.hadamard_a.bias) * torch.tanh(
        z @ net.hadamard_b.weight.T + net.hadamard_b.bias
    )
    torch.testing.assert_close(net(x), h @ net.q_head.weight.T + net.q_head.bias)
    plain = dqn.QNetwork(6, "relu", hadamard=False, hidden_dim=16)
    h = torch.relu(_conv_features(plain, x) @ plain.dense.weight.T + plain.dense.bias)
    torch.testing.assert_close(plain(x), h @ plain.q_head.weight.T + plain.q_head.bias)
    assert list(net.layer_outputs(x)) == ["conv1", "conv2", "conv3", "hadamard_a", "hadamard_b", "representation"]


def test_both_hadamard_branches_get_gradients():
    torch.manual_seed(0)
    net = dqn.QNetwork(4, "tanh", hadamard=True, hidden_dim=32)
    net(torch.randint(0, 256, (8, 4, 84, 84), dtype=torch.uint8)).pow(2).sum().backward()
    for layer in (net.hadamard_a, net.hadamard_b, net.conv1):
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0


def test_parameter_counts_of_the_variants():
    def count(**kwargs):
        return sum(p.numel() for p in dqn.QNetwork(4, **kwargs).parameters())

    hadamard, plain_1024 = count(hidden_dim=512), count(hadamard=False, hidden_dim=1024)
    assert abs(hadamard - plain_1024) / plain_1024 < 0.01
    convs = (4 * 32 * 8 * 8 + 32) + (32 * 64 * 4 * 4 + 64) + (64 * 64 * 3 * 3 + 64)
    nature_cnn = convs + (3136 * 512 + 512) + (512 * 4 + 4)
    assert count(activation="relu", hadamard=False) == nature_cnn
    assert hadamard == nature_cnn + 3136 * 512 + 512


def test_linear_schedule():
    assert dqn.linear_schedule(1.0, 0.01, 100, 0) == 1.0
    assert dqn.linear_schedule(1.0, 0.01, 100, 50) == pytest.approx(0.505)
    assert dqn.linear_schedule(1.0, 0.01, 100, 1000) == pytest.approx(0.01)
    assert dqn.linear_schedule(1.0, 0.01, 0, 0) == 0.01


# ---------------------------------------------------------------------------------------------------------
# Whole runs in a subprocess
# ---------------------------------------------------------------------------------------------------------

TINY = (
    "--total-timesteps 400 --learning-starts 100 --buffer-size 1000 --batch-size 8 --hidden-dim 32 "
    "--diagnostics-samples 64 --diagnostics-interval 200 --save-activations --save-model --eval-episodes 1 "
    "--max-episode-frames 400 --target-network-frequency 100 --seed 7 --capture-video"  # its video: test_videos.py
).split()


def run_script(cwd, *args):
    return script_runs.run_script(SCRIPT, cwd, args)


@pytest.fixture(scope="module")
def two_tiny_runs(tmp_path_factory):
    runs = []
    for name in ("first", "second"):
        cwd = tmp_path_factory.mktemp(name)
        result = run_script(cwd, *TINY)
        assert result.returncode == 0, result.stderr
        (run_dir,) = glob.glob(str(cwd / "runs" / "*"))
        runs.append((run_dir, result))
    return runs


def test_tiny_run_logs_everything(two_tiny_runs):
    run_dir, result = two_tiny_runs[0]
    scalars, histograms = read_scalars(run_dir)
    for tag in (
        "charts/episodic_return",
        "charts/episodic_length",
        "charts/SPS",
        "charts/epsilon",
        "losses/td_loss",
        "losses/q_values",
        "eval/episodic_return",
    ):
        assert scalars.get(tag), f"{tag} missing"
    assert [step for step, _ in scalars["losses/td_loss"]] == [200, 300, 400]  # training ran from step 101
    assert len(scalars["eval/episodic_return"]) == 1
    assert os.listdir(os.path.join(run_dir, "videos")) == ["step_400_game_1.mp4"]
    for layer in ("conv1", "conv2", "conv3", "hadamard_a", "hadamard_b", "representation"):
        for metric in ("dead_fraction", "dormant_fraction", "srank", "effective_rank"):
            assert [s for s, _ in scalars[f"diagnostics/{metric}/{layer}"]] == [200, 400]
        assert f"activations/{layer}" in histograms
    files = sorted(os.listdir(os.path.join(run_dir, "activations")))
    assert files == ["step_200.npz", "step_400.npz"]
    with np.load(os.path.join(run_dir, "activations", "step_400.npz")) as saved:
        assert saved["representation"].shape == (64, 32)
    # the checkpoint loads safely into a fresh network
    state = torch.load(os.path.join(run_dir, "dqn_atari_hadamard.pt"), weights_only=True)
    dqn.QNetwork(4, hidden_dim=32).load_state_dict(state)
    assert os.path.exists(os.path.join(run_dir, "args.json"))


def test_same_seed_gives_the_same_losses(two_tiny_runs):
    (first, _), (second, _) = two_tiny_runs
    a, _ = read_scalars(first)
    b, _ = read_scalars(second)
    for tag in ("losses/td_loss", "losses/q_values", "charts/episodic_return", "diagnostics/srank/representation"):
        assert a[tag] == b[tag], tag


def test_pure_data_collection_says_so(tmp_path):
    result = run_script(
        tmp_path,
        "--total-timesteps",
        "200",
        "--learning-starts",
        "200",
        "--buffer-size",
        "300",
        "--diagnostics-interval",
        "0",
    )
    assert result.returncode == 0, result.stderr
    assert "only collects experience" in result.stdout
    (run_dir,) = glob.glob(str(tmp_path / "runs" / "*"))
    scalars, _ = read_scalars(run_dir)
    assert "losses/td_loss" not in scalars and scalars["charts/SPS"]


def test_an_existing_run_folder_is_not_overwritten(tmp_path):
    now = int(time.time())
    for t in range(now, now + 120):  # every run folder the script could pick in the next two minutes
        os.makedirs(tmp_path / "runs" / f"Breakout-v5__dqn_atari_hadamard__1__{t}")
    result = run_script(tmp_path, "--total-timesteps", "10")
    assert result.returncode != 0
    assert "exists already" in result.stderr and "Traceback" not in result.stderr
    assert all(not os.listdir(folder) for folder in glob.glob(str(tmp_path / "runs" / "*")))


def test_check_args_accepts_the_defaults_and_data_collection():
    run_management.check_args(dqn.Args(), dqn.SCRIPT)
    run_management.check_args(dqn.Args(total_timesteps=1000, learning_starts=80_000), dqn.SCRIPT)


# each gradient step counted, written beside this module when the process exits
COUNT_GRADIENT_STEPS = """
import atexit, os, torch
_step, _count = torch.optim.Adam.step, [0]
def _counted_step(self, *args, **kwargs):
    _count[0] += 1
    return _step(self, *args, **kwargs)
torch.optim.Adam.step = _counted_step
atexit.register(lambda: open(os.path.join(os.path.dirname(__file__), "steps.txt"), "w").write(str(_count[0])))
"""


def test_a_gradient_step_every_train_frequency_env_steps_after_learning_starts(tmp_path):
    """The update cadence: with learning from step 101 and train_frequency 4, the steps 104, 108, ..., 400 learn."""
    site = tmp_path / "count"
    site.mkdir()
    (site / "sitecustomize.py").write_text(COUNT_GRADIENT_STEPS)
    args = [*TINY[:-1], "--diagnostics-interval", "0", "--eval-episodes", "0", "--train-frequency", "4"]  # no video
    result = script_runs.run_script(SCRIPT, tmp_path, args, paths=[site])
    assert result.returncode == 0, result.stderr[-2000:]
    assert int((site / "steps.txt").read_text()) == len(range(104, 401, 4)) == 75
