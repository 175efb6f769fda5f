"""Ctrl-C keeps what was logged: each script, interrupted mid-training, exits 0 with its events and checkpoint."""

import os
import signal
import subprocess
import sys
import time

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = {
    "dqn": ["--learning-starts", "50", "--buffer-size", "1000", "--batch-size", "8"],
    "ppo": ["--num-envs", "2", "--num-steps", "32"],
    "pqn": ["--num-envs", "4", "--num-steps", "16", "--num-minibatches", "4"],
}


@pytest.mark.parametrize("script", ["dqn", "ppo", "pqn"])
def test_ctrl_c_keeps_what_was_logged(script, tmp_path):
    command = [
        sys.executable,
        os.path.join(REPO_ROOT, f"{script}_atari_hadamard.py"),
        "--env-id",
        "Pong-v5",
        "--total-timesteps",
        "100000000",
        "--hidden-dim",
        "32",
        "--diagnostics-interval",
        "0",
        "--save-model",
        "--no-cuda",
        *SMALL[script],
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT)
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = ""
    while " SPS " not in output:  # the first status line comes a few seconds into training
        line = process.stdout.readline()
        assert line, f"the script ended before training:\n{output}"
        output += line
    time.sleep(1)
    process.send_signal(signal.SIGINT)
    output += process.communicate(timeout=120)[0]
    assert process.returncode == 0, output
    assert "interrupted at step" in output and "Traceback" not in output

    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / f"{script}_atari_hadamard.pt").is_file()
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert len(events.Scalars("charts/SPS")) >= 1  # written, although the writer flushes only every 2 minutes
