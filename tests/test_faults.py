"""Faults caused the way they really happen, not raised by hand: a write that fails inside torch.save, a closed pipe,
a terminal that goes away, damaged and foreign checkpoint and model files, a signal during an evaluation."""

import json
import os
import pty
import signal
import subprocess
import sys
import time

import pytest
import torch
from faults import STOP_AFTER_FIRST_CHECKPOINT, STOP_AFTER_FIRST_EVALUATION_GAME, fault_folder
from script_runs import REPO_ROOT, run_script, script_env

import run_management

PQN = os.path.join(REPO_ROOT, "pqn_atari_hadamard.py")
TINY = "--num-envs 4 --num-steps 16 --num-minibatches 4 --hidden-dim 32 --diagnostics-interval 0 --no-cuda"
TINY += " --max-episode-frames 400 --save-model --eval-episodes 1"
LONG = TINY.replace("--eval-episodes 1", "--eval-episodes 0") + " --total-timesteps 100000000"

# the kernel's limit on the size of any file the process writes: past it, write() fails with EFBIG inside torch's zip
# writer, as it fails with ENOSPC on a full disk (SIGXFSZ ignored, so that the write fails instead of killing)
FILE_SIZE_LIMIT = """
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))
"""


def status(run_dir) -> dict:
    with open(run_dir / "status.json") as f:
        return json.load(f)


def only_run(cwd):
    (run_dir,) = (cwd / "runs").iterdir()
    return run_dir


@pytest.mark.parametrize("limit, written", [(2_000_000, "model"), (200_000, "nothing")])
def test_a_write_failing_inside_torch_save_keeps_the_files_whole_and_says_which(limit, written, tmp_path):
    # the model of this network is about 0.9 MB, its checkpoint (with Adam's moments) about 2.7 MB
    site = fault_folder(tmp_path, FILE_SIZE_LIMIT.format(limit=limit))
    result = run_script(PQN, tmp_path, f"{TINY} --total-timesteps 128".split(), timeout=120, paths=[site])
    assert result.returncode == 1, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: crashed at step 128: OSError: ") and "File too large" in line, line
    run_dir = only_run(tmp_path)
    ended = status(run_dir)
    assert ended["status"] == "crashed" and ended["message"] in line
    assert not [name for name in os.listdir(run_dir) if name.endswith(".tmp")]
    assert not (run_dir / "checkpoint.pt").exists()
    if written == "model":
        assert "the model was saved to" in line and "could not write" in line and "checkpoint.pt" in line
        torch.load(run_dir / "pqn_atari_hadamard.pt", weights_only=True)  # whole
    else:
        assert line.startswith(f"error: crashed at step 128: OSError: could not write runs/{run_dir.name}/pqn_")
        assert not (run_dir / "pqn_atari_hadamard.pt").exists()
    resumed = run_script(PQN, tmp_path, ["--resume", f"runs/{run_dir.name}"], timeout=60)
    assert resumed.returncode == 2 and "no checkpoint to continue from (it crashed" in resumed.stderr


def test_a_write_failing_in_the_activation_files_or_tensorboard_is_one_line(tmp_path):
    """np.savez (the activation files) and TensorBoard's writer thread hit the limit too: one line, no thread trace."""
    site = fault_folder(tmp_path, FILE_SIZE_LIMIT.format(limit=30_000))
    args = f"{TINY} --total-timesteps 256 --diagnostics-interval 128 --diagnostics-samples 64 --save-activations"
    result = run_script(PQN, tmp_path, args.split(), timeout=120, paths=[site])
    assert result.returncode == 1, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: crashed at step 128: OSError: [Errno 27] File too large"), line
    run_dir = only_run(tmp_path)
    activations = run_dir / "activations"  # TensorBoard's file may reach the limit first, before any capture's
    assert status(run_dir)["status"] == "crashed" and not (activations.exists() and os.listdir(activations))


def start(cwd, stdout, stderr=subprocess.PIPE):
    return subprocess.Popen(
        [sys.executable, PQN, *LONG.split()], cwd=cwd, env=script_env(), stdout=stdout, stderr=stderr
    )


def wait_for_training(read) -> str:
    output = ""
    while "run folder" not in output:  # the start-up line: training starts right after it
        chunk = read()
        assert chunk, f"the script ended before training:\n{output}"
        output += chunk
    time.sleep(2)  # a few rollouts
    return output


def assert_stopped_whole(process, run_dir, signal_name):
    assert process.returncode == 75, process.stderr.read() if process.stderr else ""
    ended = status(run_dir)
    assert ended["status"] == "interrupted" and ended["signal"] == signal_name, ended
    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert checkpoint["global_step"] == ended["step"] == ended["checkpoint_step"] > 0
    torch.load(run_dir / "pqn_atari_hadamard.pt", weights_only=True)


def test_a_closed_pipe_stops_the_printing_not_the_run(tmp_path):
    """`python pqn_atari_hadamard.py ... | tee log`, then Ctrl-C: tee goes first and the pipe closes."""
    process = start(tmp_path, subprocess.PIPE)
    wait_for_training(lambda: process.stdout.readline().decode())
    process.stdout.close()  # the reader goes away: every later print gets EPIPE
    time.sleep(5.5)  # a status line is due every 5 s
    process.send_signal(signal.SIGINT)
    process.wait(timeout=120)
    errors = process.stderr.read().decode()
    assert "Traceback" not in errors and "BrokenPipe" not in errors, errors
    assert_stopped_whole(process, only_run(tmp_path), "SIGINT")


def test_a_closed_terminal_stops_the_run_at_a_safe_point(tmp_path):
    """The terminal's window closes: its tty is gone (writes fail with EIO) and the run gets SIGHUP."""
    terminal, tty = pty.openpty()
    process = start(tmp_path, tty, stderr=tty)
    os.close(tty)
    wait_for_training(lambda: os.read(terminal, 4096).decode())
    os.close(terminal)  # the terminal goes away
    time.sleep(6)
    process.send_signal(signal.SIGHUP)
    process.wait(timeout=120)
    assert_stopped_whole(process, only_run(tmp_path), "SIGHUP")


def test_help_into_a_closed_pipe_says_nothing_more(tmp_path):
    """`python pqn_atari_hadamard.py --help | head -0`: the reader is gone before the help is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    result = subprocess.run([sys.executable, PQN, "--help"], stdout=write_end, stderr=subprocess.PIPE, env=script_env())
    os.close(write_end)
    assert result.returncode == 0 and result.stderr == b"", result.stderr.decode()


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A real interrupted run with a checkpoint (SIGTERM after its first checkpoint), made once."""
    cwd = tmp_path_factory.mktemp("stopped")
    site = fault_folder(cwd, STOP_AFTER_FIRST_CHECKPOINT)
    args = f"{TINY} --total-timesteps 256 --checkpoint-interval 64 --env-id ALE/Breakout-v5".split()
    result = run_script(PQN, cwd, args, timeout=120, paths=[site])
    assert result.returncode == 75, result.stderr[-2000:]
    run_dir = only_run(cwd)
    assert run_dir.name.startswith("ALE-Breakout-v5__") and (run_dir / "args.json").exists()  # flat under runs/
    return run_dir


def folder_state(run_dir) -> dict:
    return {name: (run_dir / name).read_bytes() for name in sorted(os.listdir(run_dir))}


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("truncated", "checkpoint.pt: damaged: "),
        ("empty", "checkpoint.pt: damaged: empty"),
        ("garbage", "checkpoint.pt: damaged: "),
        ("foreign", "checkpoint.pt: not a checkpoint of pqn_atari_hadamard.py"),
        ("foreign model", "pqn_atari_hadamard.pt: not a model of pqn_atari_hadamard.py"),
        ("truncated model", "pqn_atari_hadamard.pt: damaged: "),
    ],
)
def test_a_damaged_or_foreign_file_is_refused_in_one_line_and_nothing_changes(
    damage, reason, stopped_run, tmp_path, monkeypatch, capfd
):
    """The script's own start-up (parse_args, what __main__ runs before any work), in this process for speed."""
    import pqn_atari_hadamard as pqn

    run_dir = tmp_path / "runs" / stopped_run.name
    run_dir.parent.mkdir()
    os.system(f"cp -r {stopped_run} {run_dir}")
    name = "pqn_atari_hadamard.pt" if "model" in damage else "checkpoint.pt"
    data = (run_dir / name).read_bytes()
    if damage.startswith("truncated"):
        (run_dir / name).write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        (run_dir / name).write_bytes(b"")
    elif damage == "garbage":
        (run_dir / name).write_bytes(os.urandom(len(data)))
    elif damage == "foreign":  # a DQN checkpoint, by the script it names
        torch.save({"script": "dqn_atari_hadamard.py", "global_step": 64}, run_dir / name)
    else:  # PPO's network in place of PQN's
        import ppo_atari_hadamard as ppo

        torch.save(ppo.Agent(4, hidden_dim=32).state_dict(), run_dir / name)
    before = folder_state(run_dir)
    args = ["--resume", f"runs/{run_dir.name}"] + (["--eval-only"] if "model" in damage else [])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        run_management.parse_args(pqn.SCRIPT, args)
    assert stopped.value.code == 2
    (line,) = capfd.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and reason in line, line
    assert folder_state(run_dir) == before


def test_an_interrupted_evaluation_keeps_the_one_recorded_before(tmp_path):
    # games of up to 500 steps, which the model's lost lives end at different steps
    args = f"{TINY} --total-timesteps 64 --max-episode-frames 2000".split()
    result = run_script(PQN, tmp_path, args, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = only_run(tmp_path)
    recorded = status(run_dir)["evaluation"]
    assert len(recorded["returns"]) == 1
    site = fault_folder(tmp_path, STOP_AFTER_FIRST_EVALUATION_GAME)
    args = ["--resume", f"runs/{run_dir.name}", "--eval-only", "--eval-episodes", "2"]
    evaluated = run_script(PQN, tmp_path, args, timeout=120, paths=[site])
    assert evaluated.returncode == 75 and "over 1 of 2 games" in evaluated.stdout, evaluated.stderr[-2000:]
    assert status(run_dir)["evaluation"] == recorded and status(run_dir)["status"] == "finished"
