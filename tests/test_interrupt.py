"""Stopping a run: a signal mid-run and an error in the loop both keep what the run reached and say how it ended."""

import io
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from faults import FULL_DISK_AT_EVERY_SAVE, FULL_DISK_AT_FIRST_CAPTURE, STOP_AFTER_FIRST_EVALUATION_GAME, fault_folder
from script_runs import REPO_ROOT, read_scalars, run_script, script_env

import run_management

SMALL = {
    "dqn": ["--learning-starts", "50", "--buffer-size", "1000", "--batch-size", "8"],
    "ppo": ["--num-envs", "2", "--num-steps", "32"],
    "pqn": ["--num-envs", "4", "--num-steps", "16", "--num-minibatches", "4"],
}
EXIT_INTERRUPTED, EXIT_CRASHED = 75, 1


def command(script, *args):
    return [sys.executable, os.path.join(REPO_ROOT, f"{script}_atari_hadamard.py"), *args]


def status(run_dir) -> dict:
    with open(run_dir / "status.json") as f:
        return json.load(f)


# one script is enough here: the three share the signal handling, and tests/test_resume.py stops each of them with a
# SIGTERM at a known step and checks the same things
@pytest.mark.parametrize("script", ["dqn"])
def test_sigterm_mid_run_keeps_a_checkpoint_and_the_logs(script, tmp_path):
    args = ["--env-id", "Pong-v5", "--total-timesteps", "100000000", "--hidden-dim", "32"]
    args += ["--diagnostics-interval", "0", "--save-model", "--no-cuda", *SMALL[script]]
    process = subprocess.Popen(
        command(script, *args),
        cwd=tmp_path,
        env=script_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = ""
    while "run folder" not in output:  # the start-up line: training starts right after it
        line = process.stdout.readline()
        assert line, f"the script ended before training:\n{output}"
        output += line
    time.sleep(2)
    process.send_signal(signal.SIGTERM)
    output += process.communicate(timeout=120)[0]
    assert process.returncode == EXIT_INTERRUPTED, output
    assert "interrupted by SIGTERM at step" in output and "--resume" in output and "Traceback" not in output

    (run_dir,) = (tmp_path / "runs").iterdir()
    assert f"run folder: runs/{run_dir.name}" in output
    ended = status(run_dir)
    assert ended["status"] == "interrupted" and ended["signal"] == "SIGTERM" and ended["checkpoint_step"] > 0
    torch.load(run_dir / f"{script}_atari_hadamard.pt", weights_only=True)
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] == ended["step"] == ended["checkpoint_step"]
    assert not [name for name in os.listdir(run_dir) if name.endswith(".tmp")]
    scalars, _ = read_scalars(run_dir)
    assert scalars["charts/SPS"]  # written, although the writer flushes only every 2 minutes


# every step of the games takes 0.1 s longer: a PQN rollout of 64 steps, and so its next safe point, lasts 6.4 s
SLOW_GAMES = """
import time
from ale_py import vector_env
_recv = vector_env.AtariVectorEnv.recv
def _slow_recv(self, *args, **kwargs):
    time.sleep(0.1)
    return _recv(self, *args, **kwargs)
vector_env.AtariVectorEnv.recv = _slow_recv
"""
# the first reset of the games stays 8 s in C without a return to Python, as 128 games' reset does on a busy CPU
# (glibc's system() waits for its child in C, through any signal)
SLOW_RESET = """
import os
from ale_py import vector_env
_reset = vector_env.AtariVectorEnv.reset
def _slow_reset(self, *args, **kwargs):
    os.system("sleep 8")
    return _reset(self, *args, **kwargs)
vector_env.AtariVectorEnv.reset = _slow_reset
"""


@pytest.mark.parametrize(
    "signal_name, signals, fault", [("SIGINT", 1, SLOW_GAMES), ("SIGINT", 2, SLOW_GAMES), ("SIGTERM", 1, SLOW_RESET)]
)
def test_a_signal_is_acknowledged_at_once_and_a_second_one_stops_at_once(signal_name, signals, fault, tmp_path):
    """A real signal, mid-rollout or in the middle of the games' reset, to a run with the default run management (no
    --save-model written): one line says so within a second and a half, long before the safe point; the run then
    stops there with a checkpoint, or, after a second signal, at once."""
    args = ["--total-timesteps", "100000", "--num-envs", "4", "--num-steps", "64", "--num-minibatches", "4"]
    args += ["--hidden-dim", "32", "--diagnostics-samples", "64", "--no-cuda"]
    process = subprocess.Popen(
        command("pqn", *args),
        cwd=tmp_path,
        env=script_env(fault_folder(tmp_path, fault)),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = ""
    while "run folder" not in output:  # the start-up line: the games' reset, then the first rollout, follow it
        line = process.stdout.readline()
        assert line, f"the script ended before training:\n{output}"
        output += line
    time.sleep(0.5)
    process.send_signal(signal.Signals[signal_name])
    sent, lines = time.monotonic(), []
    for line in iter(process.stdout.readline, ""):
        lines.append((time.monotonic() - sent, line.rstrip()))
        if signals == 2 and line.startswith("stopping at the next safe point"):
            process.send_signal(signal.Signals[signal_name])
    process.wait(timeout=60)
    said = [line for _, line in lines]
    assert process.returncode == EXIT_INTERRUPTED, output + "\n".join(said)
    acknowledged = [
        i for i, line in enumerate(said) if line.startswith(f"stopping at the next safe point ({signal_name}")
    ]
    ended = [i for i, line in enumerate(said) if line.startswith(f"interrupted by {signal_name}")]
    assert len(acknowledged) == 1 and len(ended) == 1 and acknowledged[0] < ended[0], said
    assert lines[acknowledged[0]][0] < 1.5, lines  # at once, not at the safe point, seconds later
    (run_dir,) = (tmp_path / "runs").iterdir()
    if signals == 1:
        assert lines[ended[0]][0] > lines[acknowledged[0]][0] + 3, lines  # the run went on to its safe point
        continued = f"continue from step 256 with python pqn_atari_hadamard.py --resume runs/{run_dir.name}"
        assert said[ended[0]] == f"interrupted by {signal_name} at step 256: {continued}"
        assert status(run_dir)["checkpoint_step"] == 256 and (run_dir / "checkpoint.pt").exists()
    else:
        assert lines[ended[0]][0] < 4, lines  # in the middle of the rollout
        assert said[ended[0]].startswith(f"interrupted by {signal_name} (twice: at once) at step ")
        assert "the weights are saved; no checkpoint to continue from (stopped at once)" in said[ended[0]]
        assert not (run_dir / "checkpoint.pt").exists() and (run_dir / "pqn_atari_hadamard.pt").exists()
    assert "Traceback" not in output + "\n".join(said)


@pytest.mark.parametrize("script", ["dqn", "ppo", "pqn"])
def test_an_error_in_the_loop_keeps_the_model_and_the_logs(script, tmp_path):
    args = ["--total-timesteps", "256", "--hidden-dim", "32", "--diagnostics-samples", "64"]
    args += ["--diagnostics-interval", "128", "--save-model", "--no-cuda", *SMALL[script]]
    path = os.path.join(REPO_ROOT, f"{script}_atari_hadamard.py")
    result = run_script(path, tmp_path, args, timeout=120, paths=[fault_folder(tmp_path, FULL_DISK_AT_FIRST_CAPTURE)])
    assert result.returncode == EXIT_CRASHED, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: crashed at step 128: OSError: [Errno 28] No space left on device"), line

    (run_dir,) = (tmp_path / "runs").iterdir()
    ended = status(run_dir)
    assert ended["status"] == "crashed" and "_full_disk" in ended["traceback"]
    torch.load(run_dir / f"{script}_atari_hadamard.pt", weights_only=True)
    assert not (run_dir / "checkpoint.pt").exists()  # stopped mid-step: nothing to continue from exactly
    scalars, _ = read_scalars(run_dir)
    assert max(step for step, _ in scalars["charts/SPS"]) >= 64  # flushed up to the last rollout before the error


def test_signals_ask_for_a_stop_and_a_second_one_stops_at_once():

    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        for signum in previous:
            stop = run_management.StopRequest()
            assert not stop
            os.kill(os.getpid(), signum)
            assert stop and stop.signal_name == signal.Signals(signum).name and not stop.at_once
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(500):  # the thread that counts the signals has the handler raise
                    time.sleep(0.01)
            assert stop.at_once
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_a_failed_save_leaves_the_previous_file_whole(tmp_path):

    path = str(tmp_path / "model.pt")
    run_management.atomic_save({"step": 1}, path)
    with pytest.raises(OSError, match="could not write"):  # a lambda cannot be pickled
        run_management.atomic_save({"step": 2, "unpicklable": lambda: None}, path)  # fails halfway through the write
    assert torch.load(path, weights_only=True) == {"step": 1}


def test_a_second_signal_in_the_middle_of_a_save_stops_it_at_once(tmp_path, monkeypatch):
    """torch's zip writer turns the KeyboardInterrupt that a second signal raises in one of its writes into a
    RuntimeError: it is still a stop at once (not a crash), and the file on disk stays as it was."""
    path = str(tmp_path / "model.pt")
    run_management.atomic_save({"step": 1}, path)

    class InterruptedFile(io.FileIO):
        writes = 0

        def write(self, data):
            InterruptedFile.writes += 1
            if InterruptedFile.writes == 2:  # torch's writer lets the first through unwrapped
                raise KeyboardInterrupt  # as StopRequest raises it at a second signal
            return super().write(data)

    monkeypatch.setattr(run_management, "open", lambda name, mode: InterruptedFile(name, "w"), raising=False)
    with pytest.raises(KeyboardInterrupt):
        run_management.atomic_save({"step": 2, "weights": torch.zeros(1000)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1} and os.listdir(tmp_path) == ["model.pt"]


def test_a_signal_during_the_evaluation_keeps_the_games_played(tmp_path):
    args = ["--env-id", "Pong-v5", "--total-timesteps", "128", "--hidden-dim", "32", "--diagnostics-interval", "0"]
    args += ["--save-model", "--eval-episodes", "2", "--no-cuda", *SMALL["pqn"]]
    path = os.path.join(REPO_ROOT, "pqn_atari_hadamard.py")
    result = run_script(path, tmp_path, args, paths=[fault_folder(tmp_path, STOP_AFTER_FIRST_EVALUATION_GAME)])
    assert result.returncode == EXIT_INTERRUPTED, result.stderr[-3000:]
    assert "evaluation interrupted by SIGTERM" in result.stdout and "Traceback" not in result.stderr
    assert "over 1 of 2 games" in result.stdout
    (run_dir,) = (tmp_path / "runs").iterdir()
    ended = status(run_dir)
    assert ended["status"] == "interrupted" and "evaluation" not in ended  # only a whole evaluation is recorded
    scalars, _ = read_scalars(run_dir)
    assert len(scalars["eval/episodic_return"]) == 1
    assert (run_dir / "checkpoint.pt").exists()  # --resume plays the evaluation again

    resumed = run_script(path, tmp_path, ["--resume", f"runs/{run_dir.name}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert status(run_dir)["status"] == "finished" and len(status(run_dir)["evaluation"]["returns"]) == 2


def test_a_full_disk_at_a_checkpoint_is_reported_in_one_line(tmp_path):
    args = ["--total-timesteps", "256", "--hidden-dim", "32", "--diagnostics-interval", "0", "--save-model"]
    args += ["--checkpoint-interval", "100", "--no-cuda", *SMALL["dqn"]]
    path = os.path.join(REPO_ROOT, "dqn_atari_hadamard.py")
    result = run_script(path, tmp_path, args, timeout=120, paths=[fault_folder(tmp_path, FULL_DISK_AT_EVERY_SAVE)])
    assert result.returncode == EXIT_CRASHED, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: crashed at step 100: OSError: could not write runs/"), line
    assert "dqn_atari_hadamard.pt: [Errno 28] No space left on device" in line
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert status(run_dir)["status"] == "crashed"
    assert not [name for name in os.listdir(run_dir) if name.endswith(".pt") or name.endswith(".tmp")]
