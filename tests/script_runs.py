"""Running a script as a user would, in a subprocess, and reading back what it logged."""

import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script_env(*paths) -> dict:
    """The environment of a script's subprocess: one torch thread, the repository (and paths) importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), REPO_ROOT, env.get("PYTHONPATH", "")])
    return env


def run_script(script: str, cwd, args, timeout: float = 300, paths=()) -> subprocess.CompletedProcess:
    """Runs `python script *args` in cwd (where its runs/ folder goes); modules in `paths` come first on the path."""
    return subprocess.run(
        [sys.executable, script, *args],
        cwd=cwd,
        env=script_env(*paths),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_scalars(run_dir) -> tuple[dict, list]:
    """({tag: [(step, value), ...]}, histogram tags) of a run's TensorBoard files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "histograms": 0})
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    return scalars, events.Tags()["histograms"]
