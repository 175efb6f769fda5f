"""--capture-video: the evaluation games as colour videos. The agent plays exactly the games it plays unrecorded; each
video decodes to the game's colour screens, one per step at the game's real speed; a video is whole or absent; without
the flag nothing changes and PyAV is never imported."""

import importlib
import os
import re

import numpy as np
import pytest
import torch
from faults import fault_folder
from script_runs import REPO_ROOT, run_script

import run_management

av = pytest.importorskip("av", reason="--capture-video needs PyAV: pip install av")

SCRIPTS = ("dqn", "ppo", "pqn")
TINY = {
    "dqn": "--total-timesteps 200 --learning-starts 100 --buffer-size 1000 --batch-size 8",
    "ppo": "--num-envs 2 --num-steps 32 --total-timesteps 64",
    "pqn": "--num-envs 4 --num-steps 16 --num-minibatches 4 --total-timesteps 64",
}
SHARED = "--hidden-dim 32 --diagnostics-interval 0 --no-cuda --max-episode-frames 800 --save-model --eval-episodes 2"


def decode(path) -> tuple[list[np.ndarray], float]:
    """The frames of a video as RGB arrays, and its frame rate."""
    with av.open(str(path)) as video:
        rate = float(video.streams.video[0].average_rate)
        return [frame.to_ndarray(format="rgb24") for frame in video.decode(video=0)], rate


def play(module, model_path, videos) -> tuple[list[np.ndarray], list[float], dict[int, int]]:
    """The evaluation of the script's own evaluate: every observation the agent acted on after the first, the scores,
    and for each env the number of steps its first game took."""
    seen, steps, finished_after = [], [0], {}
    stack_frames, tracker_step = module.stack_frames, module.EpisodeTracker.step

    def watched_stack_frames(*args):
        seen.append(stack_frames(*args))
        return seen[-1]

    def counted_step(self, *args):
        is_transition, life_lost, finished = tracker_step(self, *args)
        steps[0] += 1
        for env, _, _ in finished:
            finished_after.setdefault(env, steps[0])
        return is_transition, life_lost, finished

    args = module.Args(hidden_dim=32, max_episode_frames=800, eval_episodes=2, seed=3, cuda=False)
    torch.manual_seed(1)  # the policy's own sampling (PPO) and exploration (DQN, PQN)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "stack_frames", watched_stack_frames)
        patch.setattr(module.EpisodeTracker, "step", counted_step)
        scores = module.evaluate(str(model_path), args, torch.device("cpu"), False, videos)
    return seen, scores, finished_after


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_recorded_evaluation_plays_the_games_it_plays_unrecorded(script, tmp_path):
    """Step by step the same observations, the same scores; each video holds its game's screens in colour, one per
    step and one for the first screen, at 15 frames a second (4 emulator frames a step at 60 a second)."""
    module = importlib.import_module(f"{script}_atari_hadamard")
    torch.manual_seed(0)
    model_path = tmp_path / "model.pt"
    torch.save(module.make_network(module.Args(hidden_dim=32), 4).state_dict(), model_path)
    unrecorded, scores, _ = play(module, model_path, None)
    videos = run_management.GameVideos(str(tmp_path), model_step=64, games_before=0, track=False)
    recorded, recorded_scores, finished_after = play(module, model_path, videos)
    videos.close()

    assert recorded_scores == scores
    assert len(recorded) == len(unrecorded) and all(np.array_equal(a, b) for a, b in zip(recorded, unrecorded))
    assert sorted(os.listdir(tmp_path / "videos")) == ["step_64_game_1.mp4", "step_64_game_2.mp4"]
    first_to_end = sorted(finished_after, key=finished_after.get)  # the env whose game ended first is game 1
    for game, env in enumerate(first_to_end, start=1):
        frames, rate = decode(tmp_path / "videos" / f"step_64_game_{game}.mp4")
        assert rate == 15 and len(frames) == finished_after[env] + 1
        assert frames[0].shape == (210, 160, 3)
        assert any(np.abs(frame[..., 0].astype(int) - frame[..., 2]).max() > 50 for frame in frames)  # colour


# one script here: the smoke runs of tests/test_dqn.py, test_ppo.py and test_pqn.py record their evaluation game too
@pytest.mark.parametrize("script", ["pqn"])
def test_a_tiny_run_writes_a_video_of_each_evaluation_game(script, tmp_path):
    path = os.path.join(REPO_ROOT, f"{script}_atari_hadamard.py")
    result = run_script(path, tmp_path, [*TINY[script].split(), *SHARED.split(), "--capture-video"], timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    step = run_management.read_run_folder(str(run_dir))[1]["step"]
    names = [f"step_{step}_game_{game}.mp4" for game in (1, 2)]
    assert sorted(os.listdir(run_dir / "videos")) == names
    for name in names:
        assert re.search(
            rf"evaluation: game \d/2 returned -?[\d.]+: video runs/{run_dir.name}/videos/{name}", result.stdout
        )
        frames, rate = decode(run_dir / "videos" / name)
        assert rate == 15 and len(frames) > 1 and frames[0].shape == (210, 160, 3)
    if script == "pqn":  # a later evaluation's games follow the earlier ones, in TensorBoard and in the file names
        again = run_script(path, tmp_path, ["--resume", f"runs/{run_dir.name}", "--eval-only", "--eval-episodes", "1"])
        assert again.returncode == 0, again.stderr[-3000:]
        assert sorted(os.listdir(run_dir / "videos")) == [*names, f"step_{step}_game_3.mp4"]


# the video's write fails as on a full disk: a file size limit, set just before the first video is written
FILE_SIZE_LIMIT_AT_THE_FIRST_VIDEO = """
import resource, signal
import run_management
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
_save = run_management.GameVideos.save
def _limited_save(self, *args):
    resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))
    return _save(self, *args)
run_management.GameVideos.save = _limited_save
"""


def test_a_full_disk_while_writing_a_video_ends_in_one_line_and_keeps_the_other_files(tmp_path):
    path = os.path.join(REPO_ROOT, "pqn_atari_hadamard.py")
    site = fault_folder(tmp_path, FILE_SIZE_LIMIT_AT_THE_FIRST_VIDEO)
    args = [*TINY["pqn"].split(), *SHARED.split(), "--capture-video"]
    result = run_script(path, tmp_path, args, timeout=300, paths=[site])
    assert result.returncode == run_management.EXIT_CRASHED, result.stderr[-3000:]
    (line,) = result.stderr.strip().splitlines()
    assert re.search(r"could not write runs/.*/videos/step_64_game_1\.mp4: \[Errno 27\] File too large", line), line
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert os.listdir(run_dir / "videos") == []  # no part of a video
    assert run_management.read_run_folder(str(run_dir))[1]["status"] == "crashed"
    torch.load(run_dir / "pqn_atari_hadamard.pt", weights_only=True)  # the model, whole
    assert (run_dir / "checkpoint.pt").exists()  # the run can still be evaluated again: --resume


# PyAV cannot be imported in the script's process
WITHOUT_PYAV = """
import sys
sys.modules["av"] = None
"""


def test_without_the_flag_nothing_changes_and_without_pyav_the_flag_stops_in_one_line(tmp_path):
    path = os.path.join(REPO_ROOT, "pqn_atari_hadamard.py")
    site = fault_folder(tmp_path, WITHOUT_PYAV)
    args = [*TINY["pqn"].split(), *SHARED.split()]
    result = run_script(path, tmp_path, args, timeout=300, paths=[site])
    assert result.returncode == 0, result.stderr[-3000:]  # PyAV is imported only for --capture-video
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert not (run_dir / "videos").exists() and "video" not in result.stdout

    refused = run_script(path, tmp_path / "runs", [*args, "--capture-video"], timeout=300, paths=[site])
    assert refused.returncode == 2
    assert refused.stderr.strip() == "error: --capture-video needs PyAV (pip install av)"
    assert not (tmp_path / "runs" / "runs").exists()  # refused before any folder
