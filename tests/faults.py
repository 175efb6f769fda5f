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

# the first diagnostics capture fails as it would on a full disk
FULL_DISK_AT_FIRST_CAPTURE = """
import errno
import diagnostics
def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")
diagnostics.log_diagnostics = _full_disk
"""


def fault_folder(tmp_path, code: str):
    """A folder holding sitecustomize.py with `code`, to pass as `paths` to script_runs.run_script."""
    folder = tmp_path / "fault"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(code)
    return folder
