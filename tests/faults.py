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
# restore, before any step): the checkpoint it would save at that moment, less the clock
DUMP_RESTORED_STATE = """
import os, sys, torch
from ale_py import vector_env
_reset = vector_env.AtariVectorEnv.reset
def _dump_then_reset(self, *args, **kwargs):
    if not getattr(_dump_then_reset, "done", False):
        _dump_then_reset.done = True
        training = sys._getframe(1).f_locals  # the training function, which resets the games right after restoring
        state = training["run"].training_state(training["global_step"])
        state.pop("elapsed_time")
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
