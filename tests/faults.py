"""Faults injected into a script's subprocess: a `sitecustomize` module written to a folder put first on its path.

Python imports sitecustomize before the script, so these patches are in place when the script runs.
"""

# SIGTERM to the script itself as soon as its first checkpoint is renamed into place: a stop at a known step
STOP_AFTER_FIRST_CHECKPOINT = """
import os, signal
_replace = os.replace
def _replace_then_stop(source, target, *args, **kwargs):
    _replace(source, target, *args, **kwargs)
    if str(target).endswith("checkpoint.pt") and not getattr(_replace_then_stop, "sent", False):
        _replace_then_stop.sent = True
        os.kill(os.getpid(), signal.SIGTERM)
os.replace = _replace_then_stop
"""

# SIGKILL (no handler, no last word) when the run saves again after its first checkpoint, just before the weights
# are renamed into place; the TensorBoard writers are flushed first, so the run's logs go past that checkpoint
KILLED_AFTER_FIRST_CHECKPOINT = """
import os, signal
from torch.utils import tensorboard
_writers = []
_init = tensorboard.SummaryWriter.__init__
def _init_and_keep(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    _writers.append(self)
tensorboard.SummaryWriter.__init__ = _init_and_keep
_replace = os.replace
def _replace_or_die(source, target, *args, **kwargs):
    if getattr(_replace_or_die, "armed", False) and str(target).endswith(".pt"):
        for writer in _writers:
            writer.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    _replace(source, target, *args, **kwargs)
    if str(target).endswith("checkpoint.pt"):
        _replace_or_die.armed = True
os.replace = _replace_or_die
"""

# SIGTERM as soon as the evaluation reports its first game
STOP_AFTER_FIRST_EVALUATION_GAME = """
import builtins, os, signal
_print = builtins.print
def _print_then_stop(*args, **kwargs):
    _print(*args, **kwargs)
    if args and str(args[0]).startswith("evaluation: game 1/"):
        os.kill(os.getpid(), signal.SIGTERM)
builtins.print = _print_then_stop
"""

# a resumed run writes what it restored to restored.pt beside this module, at its first env reset (just after the
# restore, before any step), with the names its checkpoint uses
DUMP_RESTORED_STATE = """
import os, sys, torch
from ale_py import vector_env
_reset = vector_env.AtariVectorEnv.reset
def _dump_then_reset(self, *args, **kwargs):
    main = sys.modules["__main__"]
    if not getattr(_dump_then_reset, "done", False):
        _dump_then_reset.done = True
        state = {name: getattr(main, name) for name in ("global_step", "next_diagnostics_step", "next_checkpoint_step")}
        state["recent_returns"] = list(main.recent_returns)
        state["rng"] = main.rng_states()
        for name in ("q_network", "target_network", "agent", "optimizer"):
            if hasattr(main, name):
                state[name] = getattr(main, name).state_dict()
        if hasattr(main, "rb"):
            state["replay_memory"] = main.saveable_vars(main.rb)
            state["probe_generator"] = main.probe_generator.bit_generator.state
        else:
            state["probe_generator"] = main.probe_generator.get_state()
        torch.save(state, os.path.join(os.path.dirname(__file__), "restored.pt"))
    return _reset(self, *args, **kwargs)
vector_env.AtariVectorEnv.reset = _dump_then_reset
"""

# the first diagnostics capture fails as it would on a full disk
FULL_DISK_AT_FIRST_CAPTURE = """
import errno
import diagnostics
def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")
diagnostics.log_diagnostics = _full_disk
"""


def fault_folder(tmp_path, code: str, name: str = "fault"):
    """A folder holding sitecustomize.py with `code`, to pass as `paths` to script_runs.run_script."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(code)
    return folder


# every file the script syncs fails as on a full disk: its checkpoints (and so its model, written the same way)
FULL_DISK_AT_EVERY_SAVE = """
import errno, os
def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")
os.fsync = _full_disk
"""
