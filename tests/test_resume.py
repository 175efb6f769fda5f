"""--resume: a run stopped by SIGTERM and resumed reaches the same step count, its logs continue where they stopped, and
what docs/long-runs.md says is identical to an uninterrupted run is identical."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from faults import DUMP_RESTORED_STATE, KILLED_AFTER_FIRST_CHECKPOINT, STOP_AFTER_FIRST_CHECKPOINT, fault_folder
from script_runs import REPO_ROOT, read_scalars, run_script

import run_management

TINY = {
    "dqn": "--total-timesteps 400 --learning-starts 100 --buffer-size 1000 --batch-size 8 --diagnostics-samples 64 "
    "--diagnostics-interval 100 --target-network-frequency 100",
    "ppo": "--num-envs 2 --num-steps 32 --total-timesteps 300 --diagnostics-samples 64 --diagnostics-interval 64",
    "pqn": "--num-envs 4 --num-steps 16 --num-minibatches 4 --total-timesteps 256 --diagnostics-samples 64 "
    "--diagnostics-interval 64",
}
COMMON = "--hidden-dim 32 --seed 3 --save-model --eval-episodes 1 --max-episode-frames 500 --no-cuda"
CHECKPOINT = {"dqn": 200, "ppo": 128, "pqn": 128}  # the first checkpoint, where the stopped run stops
TOTAL = {"dqn": 400, "ppo": 256, "pqn": 256}  # PPO's 300 steps are 4 whole rollouts of 64
# logged on a schedule of steps, whatever the games do (episodic returns follow the games, SPS the clock)
SCHEDULED = ("losses/", "diagnostics/", "charts/epsilon", "charts/learning_rate")


def run(script, cwd, args, paths=()):
    result = run_script(os.path.join(REPO_ROOT, f"{script}_atari_hadamard.py"), cwd, args, timeout=240, paths=paths)
    return result


def logged(run_dir) -> dict:
    scalars, _ = read_scalars(run_dir)
    return {tag: values for tag, values in scalars.items() if tag != "charts/SPS"}


def assert_identical(value, expected, where: str) -> None:
    if isinstance(value, dict):
        assert value.keys() == expected.keys(), where
        for key in value:
            assert_identical(value[key], expected[key], f"{where}/{key}")
    elif isinstance(value, (list, tuple)):
        assert len(value) == len(expected), where
        for index, (item, expected_item) in enumerate(zip(value, expected)):
            assert_identical(item, expected_item, f"{where}/{index}")
    elif isinstance(value, torch.Tensor):
        assert torch.equal(value, expected), where
    else:
        assert value == expected, where


def weights(run_dir, script):
    return torch.load(os.path.join(run_dir, f"{script}_atari_hadamard.pt"), weights_only=True)


UNINTERRUPTED = {}


def uninterrupted_run(script, tmp_path_factory):
    """The run folder of the script's uninterrupted run, made once and shared by the tests that compare with it."""
    if script not in UNINTERRUPTED:
        folder = tmp_path_factory.mktemp(f"{script}_whole")
        args = f"{TINY[script]} {COMMON} --checkpoint-interval {CHECKPOINT[script]}".split()
        whole = run(script, folder, args)
        assert whole.returncode == 0, whole.stderr[-3000:]
        (UNINTERRUPTED[script],) = (folder / "runs").iterdir()
    return UNINTERRUPTED[script]


# SIGTERM: the run stops at its first checkpoint and says so; SIGKILL: it dies without a word at its next save,
# its logs reaching past the checkpoint, which the resumed run must hide
STOPS = [("dqn", "SIGTERM"), ("ppo", "SIGTERM"), ("pqn", "SIGTERM"), ("dqn", "SIGKILL")]


@pytest.mark.parametrize("script, stop", STOPS)
def test_a_stopped_and_resumed_run_continues_the_same_experiment(script, stop, tmp_path, tmp_path_factory):
    args = f"{TINY[script]} {COMMON} --checkpoint-interval {CHECKPOINT[script]}".split()
    (tmp_path / "stopped").mkdir()
    whole_dir = uninterrupted_run(script, tmp_path_factory)
    fault = STOP_AFTER_FIRST_CHECKPOINT if stop == "SIGTERM" else KILLED_AFTER_FIRST_CHECKPOINT
    stopped = run(script, tmp_path / "stopped", args, paths=[fault_folder(tmp_path, fault)])
    (run_dir,) = (tmp_path / "stopped" / "runs").iterdir()
    with open(run_dir / "status.json") as f:
        status = json.load(f)
    if stop == "SIGTERM":
        assert stopped.returncode == 75 and status["status"] == "interrupted", stopped.stderr[-3000:]
        assert status["step"] == CHECKPOINT[script] and status["signal"] == "SIGTERM"
        output = stopped.stdout + stopped.stderr
        assert f"interrupted by SIGTERM at step {CHECKPOINT[script]}" in output and "--resume" in output
        assert "Traceback" not in output and f"run folder: runs/{run_dir.name}" in output
        assert torch.load(run_dir / "checkpoint.pt", weights_only=True)["global_step"] == CHECKPOINT[script]
        weights(run_dir, script)  # the model is whole too
        assert not [name for name in os.listdir(run_dir) if name.endswith(".tmp")]
        assert logged(run_dir)["losses/td_loss" if script != "ppo" else "losses/value_loss"]  # the logs were flushed
    else:
        assert stopped.returncode == -9 and status["status"] == "running", stopped.stderr[-3000:]
        assert max(step for values in logged(run_dir).values() for step, _ in values) > CHECKPOINT[script]
    assert status["checkpoint_step"] == CHECKPOINT[script]
    twin_dir = tmp_path / "twin" / "runs" / run_dir.name
    shutil.copytree(run_dir, twin_dir)
    if script == "pqn" and stop == "SIGTERM":  # an older script's checkpoint, without the games' actions: refused
        older_dir = tmp_path / "older" / "runs" / run_dir.name
        shutil.copytree(run_dir, older_dir)
        checkpoint = torch.load(older_dir / "checkpoint.pt", weights_only=True)
        del checkpoint["actions_sent"]
        torch.save(checkpoint, older_dir / "checkpoint.pt")
        refused = run(script, older_dir.parent.parent, ["--resume", f"runs/{run_dir.name}"])
        assert refused.returncode == 2 and "has no actions_sent" in refused.stderr, refused.stderr[-3000:]
        assert "Traceback" not in refused.stderr
        with open(older_dir / "status.json") as f:  # the folder still says how the run stopped
            assert {key: value for key, value in json.load(f).items() if key != "updated"} == {
                key: value for key, value in status.items() if key != "updated"
            }

    dump = fault_folder(tmp_path, DUMP_RESTORED_STATE, "dump")
    for folder in (run_dir, twin_dir)[: 2 if stop == "SIGTERM" else 1]:
        paths = [dump] if folder == run_dir else []
        resumed = run(script, folder.parent.parent, ["--resume", f"runs/{run_dir.name}"], paths=paths)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert f"resumed at step {CHECKPOINT[script]}" in resumed.stdout
        with open(folder / "status.json") as f:
            finished = json.load(f)
        assert finished["status"] == "finished" and finished["checkpoint_step"] is None  # no checkpoint is left
        assert not (folder / "checkpoint.pt").exists()
        if folder == run_dir:  # what the resumed run restored is exactly what the stopped run saved
            saved = torch.load(twin_dir / "checkpoint.pt", weights_only=True)
            restored = torch.load(dump / "restored.pt", weights_only=True)
            if script == "dqn":  # the game in progress was abandoned: the next transition starts a new game
                assert restored["replay_memory"].pop("starting_game") is True
                assert saved["replay_memory"].pop("starting_game") is False  # a game was in progress
            for name, value in restored.items():
                assert_identical(value, saved[name], name)

    expected, got = logged(whole_dir), logged(run_dir)
    for tag, values in expected.items():
        if tag.startswith("eval/"):
            continue
        before = [(step, value) for step, value in values if step <= CHECKPOINT[script]]
        assert [(step, value) for step, value in got.get(tag, []) if step <= CHECKPOINT[script]] == before, tag
        if tag.startswith(SCHEDULED):  # on the same steps after the resume too, each once
            assert [step for step, _ in got[tag]] == [step for step, _ in values], tag
    for tag in ("charts/epsilon", "charts/learning_rate"):
        if tag in expected:  # the schedules continue exactly
            assert got[tag] == expected[tag], tag
    assert max(step for values in got.values() for step, _ in values) == TOTAL[script]

    # PPO and PQN replay the games to the checkpoint (ActionLog): the resumed run is the uninterrupted one, every game,
    # loss and weight; DQN's resumed part plays fresh games, so it is not; resuming is itself reproducible
    if stop == "SIGKILL":
        return
    assert logged(twin_dir) == got
    twin, final, whole = weights(twin_dir, script), weights(run_dir, script), weights(whole_dir, script)
    assert all(torch.equal(twin[name], final[name]) for name in final)
    assert final.keys() == whole.keys()
    if script != "dqn":
        for tag, values in expected.items():
            assert got[tag] == values, f"{tag}: the resumed run is not the uninterrupted one"
        assert all(torch.equal(whole[name], final[name]) for name in final)
    else:
        returns = "charts/episodic_return"
        assert got[returns] != expected[returns]  # fresh games after the resume

    if script == "pqn":  # the finished run's model evaluated on its own
        evaluated = run(
            script, tmp_path / "stopped", ["--resume", f"runs/{run_dir.name}", "--eval-only", "--eval-episodes", "2"]
        )
        assert evaluated.returncode == 0, evaluated.stderr[-3000:]
        assert "evaluation: game 2/2 returned" in evaluated.stdout
        with open(run_dir / "status.json") as f:
            status = json.load(f)
        assert status["status"] == "finished" and len(status["evaluation"]["returns"]) == 2
        assert len(logged(run_dir)["eval/episodic_return"]) == 1 + 2  # the run's own game, then these two


def test_the_replay_memory_comes_back_exactly_through_a_saved_file(tmp_path):
    import dqn_atari_hadamard as dqn

    rng = np.random.default_rng(0)
    memory = dqn.ReplayBuffer(50, seed=1)
    obs = np.full((4, 84, 84), 7, dtype=np.uint8)
    for t in range(80):  # wraps around: every array and counter is in use
        next_obs = np.concatenate([obs[1:], rng.integers(0, 255, (1, 84, 84), dtype=np.uint8)])
        game_over = t % 30 == 29
        memory.add(obs, next_obs, t % 4, 1.0, terminal=game_over, game_over=game_over, is_transition=t % 7 != 3)
        obs = next_obs if not game_over else np.repeat(next_obs[-1:], 4, axis=0)
    path = str(tmp_path / "memory.pt")
    run_management.atomic_save(memory.state_dict(), path)
    expected_batch = memory.sample(16)

    copy = dqn.ReplayBuffer(50, seed=99)
    copy.load_state_dict(torch.load(path, weights_only=True))
    for name in dqn.ReplayBuffer.ARRAYS:
        assert np.array_equal(getattr(copy, name), getattr(memory, name)), name
    assert (copy.num_transitions, copy.size, copy.newest) == (memory.num_transitions, memory.size, memory.newest)
    assert copy.starting_game  # the game in progress is not restored: the next transition starts a fresh one
    batch = copy.sample(16)  # the sampling generator continues from the saved state, not from seed 99
    assert all(np.array_equal(a, b) for a, b in zip(batch, expected_batch))
