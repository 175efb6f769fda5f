"""run_management.py: the one reader of a run folder, a fault of the machine told from a bug, how a run's end is
recorded (in-process); then as a student meets it: a bug planted in a copy of a script ends in Python's traceback with
the copy's file and line, and a script copied out with its two modules trains on its own."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from faults import STOP_AFTER_FIRST_CHECKPOINT, fault_folder
from script_runs import REPO_ROOT, read_scalars, run_script
from test_exercises import EXERCISES

import pqn_atari_hadamard as pqn
import run_management

TINY_PPO = "--num-envs 2 --num-steps 32 --hidden-dim 32 --diagnostics-interval 0 --no-cuda --max-episode-frames 400"
TINY_PQN = "--num-envs 4 --num-steps 16 --num-minibatches 4 --hidden-dim 32 --diagnostics-interval 0 --no-cuda"
TINY_PQN += " --max-episode-frames 400 --total-timesteps 128 --save-model --eval-episodes 1"


def status(run_dir) -> dict:
    return run_management.read_run_folder(str(run_dir))[1]


@pytest.fixture
def signals_restored():
    """Run installs its signal handlers in this process: put the previous ones back afterwards."""
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    yield
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def new_run(tmp_path, monkeypatch, **changes) -> run_management.Run:
    """A PQN run in tmp_path/runs/, started with a small stand-in network."""
    monkeypatch.chdir(tmp_path)
    args = pqn.Args(total_timesteps=128, hidden_dim=32, diagnostics_interval=0, cuda=False, **changes)
    run = run_management.Run(args, pqn.SCRIPT)
    run.start_training(nn.Linear(2, 2), optimizer=torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1))
    return run


def test_the_reader_of_a_run_folder(tmp_path):
    assert run_management.read_run_folder(str(tmp_path)) == (None, {})  # nothing there
    (tmp_path / "args.json").write_text('{"seed": 3}')
    (tmp_path / "status.json").write_text('{"status": "fini')  # cut short
    assert run_management.read_run_folder(str(tmp_path)) == ({"seed": 3}, {})
    run_management.write_status(str(tmp_path), status="finished")  # replaces the damaged one, whole
    assert status(tmp_path)["status"] == "finished" and not (tmp_path / "status.json.tmp").exists()
    (tmp_path / "args.json").write_text("[1, 2]")  # JSON, but not a run's arguments
    assert run_management.read_run_folder(str(tmp_path))[0] is None


def chained(error: BaseException, wrapper: BaseException) -> BaseException:
    """wrapper raised while handling error, as torch's zip writer wraps the OSError of a failed write."""
    try:
        try:
            raise error
        except BaseException:
            raise wrapper from error
    except BaseException as raised:
        return raised


def test_a_fault_of_the_machine_is_told_from_a_bug():
    assert run_management.machine_fault(OSError(errno.ENOSPC, "No space left on device"))
    assert run_management.machine_fault(chained(OSError(errno.EFBIG, "File too large"), RuntimeError("zip")))
    assert run_management.machine_fault(OSError(errno.EIO, "Input/output error"))
    assert not run_management.machine_fault(FileNotFoundError(errno.ENOENT, "a student's wrong path"))
    assert not run_management.machine_fault(RuntimeError("grad can be implicitly created only for scalar outputs"))
    assert not run_management.machine_fault(chained(ValueError("a bug"), RuntimeError("and another")))


def test_a_bug_in_the_loop_is_recorded_then_raised(tmp_path, monkeypatch, capsys, signals_restored):
    run = new_run(tmp_path, monkeypatch, save_model=True)
    global_step = 0
    with pytest.raises(ZeroDivisionError):
        with run:
            global_step = 64
            global_step / 0
    ended = status(run.dir)
    assert ended["status"] == "crashed" and ended["step"] == 64 and "ZeroDivisionError" in ended["traceback"]
    assert "in test_a_bug_in_the_loop_is_recorded_then_raised" in ended["traceback"]  # the failing frame
    assert os.path.exists(run.model_path) and not os.path.exists(run.checkpoint_path)  # what can be saved is
    assert "Python's traceback follows" in capsys.readouterr().err


def test_a_full_disk_in_the_loop_ends_the_run_in_one_line(tmp_path, monkeypatch, capsys, signals_restored):
    run = new_run(tmp_path, monkeypatch)
    with run:
        raise OSError(errno.ENOSPC, "No space left on device")
    assert run.finish(64, training_over=False, device="cpu") == run_management.EXIT_CRASHED
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: crashed at step 64: OSError: [Errno 28]") and "traceback" not in line
    assert status(run.dir)["status"] == "crashed"


@pytest.mark.parametrize("checkpoint_step", [None, 32])
def test_a_second_signal_says_what_resume_will_say(checkpoint_step, tmp_path, monkeypatch, capsys, signals_restored):
    """Stopped at once with --save-model: the run and --resume agree on whether and from where it continues."""
    run = new_run(tmp_path, monkeypatch, save_model=True)
    if checkpoint_step is not None:
        run.save_checkpoint(checkpoint_step)
    run.stop_requested.signal_name, run.stop_requested.at_once = "SIGINT", True
    with run:
        raise KeyboardInterrupt  # what the second signal raises
    assert run.finish(64, training_over=False, device="cpu") == run_management.EXIT_INTERRUPTED
    said = status(run.dir)["message"]
    given = pqn.Args(resume=run.dir)
    if checkpoint_step is None:
        assert "no checkpoint to continue from (stopped at once)" in said
        with pytest.raises(ValueError, match="no checkpoint to continue from .it was stopped at once"):
            run_management.resumed_args(given, {"resume"}, pqn.SCRIPT)
    else:
        assert f"continue from step 32 with python pqn_atari_hadamard.py --resume {run.dir}" in said
        assert run_management.resumed_args(given, {"resume"}, pqn.SCRIPT).resume == run.dir
    assert capsys.readouterr().err == ""


def test_each_evaluation_logs_its_games_after_the_ones_before(tmp_path, signals_restored):
    """--eval-only after the evaluation at the end of training: TensorBoard keeps the two apart."""
    from torch.utils.tensorboard import SummaryWriter

    script = pqn.SCRIPT._replace(
        evaluate=lambda model_path, args, device, stop, videos: [1.0, 2.0][: args.eval_episodes]
    )
    run_management.write_status(str(tmp_path), status="finished")
    for games in (2, 1):
        with SummaryWriter(str(tmp_path)) as writer:
            args = pqn.Args(eval_episodes=games)
            assert run_management.evaluation(script, args, str(tmp_path), "cpu", writer, False, model_step=64)
    scalars, _ = read_scalars(tmp_path)
    assert [step for step, _ in scalars["eval/episodic_return"]] == [0, 1, 2]
    assert status(tmp_path)["evaluation"] == {"returns": [1.0], "of": 1}


def test_a_bug_planted_in_a_copy_of_a_script_shows_pythons_traceback(tmp_path):
    """The student's slip of the issue: the entropy vector passed to the loss in place of its mean."""
    with open(os.path.join(REPO_ROOT, "ppo_atari_hadamard.py")) as f:
        source = f.read()
    assert source.count("entropy_loss = entropy.mean()") == 1
    copy = tmp_path / "my_ppo.py"
    copy.write_text(source.replace("entropy_loss = entropy.mean()", "entropy_loss = entropy"))
    failing_line = source[: source.index("loss.backward()")].count("\n") + 1
    result = run_script(str(copy), tmp_path, [*TINY_PPO.split(), "--total-timesteps", "128", "--save-model"])
    assert result.returncode == 1, result.stderr[-3000:]
    assert f'File "{copy}", line {failing_line}, in train' in result.stderr
    assert result.stderr.rstrip().endswith("RuntimeError: grad can be implicitly created only for scalar outputs")
    assert "Python's traceback follows" in result.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()
    ended = status(run_dir)
    assert ended["status"] == "crashed" and f"line {failing_line}, in train" in ended["traceback"]
    assert (run_dir / "my_ppo.pt").exists()  # the weights of the step it crashed at (the copy names its files)

    # the debugger stops there too: post-mortem, `where` lists the copy's failing line
    debugged = subprocess.run(
        [sys.executable, "-m", "pdb", str(copy), *TINY_PPO.split(), "--total-timesteps", "128"],
        cwd=tmp_path,
        input="continue\nwhere\nquit\n",
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO_ROOT),
    )
    assert "Entering post mortem debugging" in debugged.stdout, debugged.stdout[-3000:]
    assert f"my_ppo.py({failing_line})train()" in debugged.stdout


def test_a_script_copied_out_with_its_two_modules_trains_on_its_own(tmp_path):
    """docs/scripts.md: to use a script elsewhere, copy it with diagnostics.py and run_management.py."""
    for name in ("pqn_atari_hadamard.py", "diagnostics.py", "run_management.py"):
        shutil.copy(os.path.join(REPO_ROOT, name), tmp_path / name)
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    result = subprocess.run(
        [sys.executable, "pqn_atari_hadamard.py", *TINY_PQN.split()],
        cwd=tmp_path,
        env=dict(env, OMP_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert status(run_dir)["status"] == "finished" and (run_dir / "pqn_atari_hadamard.pt").exists()
    with open(run_dir / "args.json") as f:
        assert json.load(f)["batch_size"] == 64  # the values computed at run time are recorded


# a student's new network option, as issue 37 met it: a third Hadamard branch from a new Args field (the exercise)
THIRD_BRANCH = EXERCISES["pqn_three_branches"].changes


def test_a_new_network_option_reaches_training_resume_and_the_evaluation(tmp_path):
    """The option is added to Args, the network and make_network only: a run with it stops at its first checkpoint,
    --resume continues it, and --resume --eval-only evaluates its saved model."""
    for name in ("pqn_atari_hadamard.py", "diagnostics.py", "run_management.py"):
        shutil.copy(os.path.join(REPO_ROOT, name), tmp_path / name)
    script = tmp_path / "pqn_atari_hadamard.py"
    source = script.read_text()
    for line, changed in THIRD_BRANCH.items():
        assert source.count(line) == 1, line
        source = source.replace(line, changed)
    script.write_text(source)
    stop = fault_folder(tmp_path, STOP_AFTER_FIRST_CHECKPOINT)
    env = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}

    def run(*args, paths=()):
        run_env = dict(env, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(map(str, paths)))
        command = [sys.executable, "pqn_atari_hadamard.py", *args]
        return subprocess.run(command, cwd=tmp_path, env=run_env, capture_output=True, text=True, timeout=300)

    tiny = "--num-envs 4 --num-steps 16 --num-minibatches 4 --hidden-dim 32 --diagnostics-samples 64 --no-cuda"
    tiny += " --max-episode-frames 400 --total-timesteps 256 --eval-episodes 1 --checkpoint-interval 128"
    stopped = run(*tiny.split(), "--hadamard-branches", "3", paths=[stop])
    assert stopped.returncode == run_management.EXIT_INTERRUPTED, stopped.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    scalars, _ = read_scalars(run_dir)
    assert "diagnostics/dead_fraction/hadamard_c" in scalars  # the diagnostics measure the new branch
    resumed = run("--resume", f"runs/{run_dir.name}")
    assert resumed.returncode == 0 and "resumed at step 128" in resumed.stdout, resumed.stderr[-3000:]
    assert "hadamard_c.weight" in torch.load(run_dir / "pqn_atari_hadamard.pt", weights_only=True)
    evaluated = run("--resume", f"runs/{run_dir.name}", "--eval-only", "--eval-episodes", "2")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "evaluation: game 2/2 returned" in evaluated.stdout
    assert len(status(run_dir)["evaluation"]["returns"]) == 2
