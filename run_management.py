"""What a run needs that is not its algorithm, once for the three scripts (docs/long-runs.md): the run folder, status,
TensorBoard, wandb, the console, signals and the safe stop, atomic saves, checkpoints that continue a run exactly, how
a run ends (exit status 0 finished, 75 interrupted, 1 crashed, 2 bad arguments), the command line and its checks, the
env-id lookup, and the one reader of a run folder. torch is imported where it is used: tools that read runs start fast.

A script hands over what is its own in Script(__file__, Args, make_network, evaluate, ARGUMENT_RANGES, argument_rules):
its tyro dataclass; make_network(args, num_actions), its network built from a run's arguments (training, evaluation and
--resume all build it there); evaluate(model_path, args, device, stop, videos) -> the scores of eval_episodes games
(stop turns true at a signal; videos: a GameVideos, or None without --capture-video); {"must be positive": (field
names), ...} and argument_rules(args) -> [(broken, message)]. Its train uses a Run (see the class).
"""

import _thread
import difflib
import errno
import importlib.util
import io
import json
import math
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

EXIT_CRASHED, EXIT_BAD_ARGUMENTS, EXIT_INTERRUPTED = 1, 2, 75  # 75 (EX_TEMPFAIL): --resume continues the run
# a fault of the machine, not of the code, ends a run in one line: the disk is full or gone, the terminal closed
MACHINE_FAULTS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EPIPE)


class Script(NamedTuple):
    """What is a script's own (see the top of this module)."""

    file: str
    Args: type
    make_network: Callable
    evaluate: Callable
    argument_ranges: dict
    argument_rules: Callable

    @property
    def name(self) -> str:
        return os.path.basename(self.file)


def say(message: str, error: bool = False) -> None:
    """Prints one line. A closed terminal (EIO) or a closed pipe (EPIPE) silences the console, never the run."""
    stream = sys.stderr if error else sys.stdout
    try:
        print(message, file=stream, flush=True)
    except OSError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


def machine_fault(error: BaseException | None) -> bool:
    """Whether an error, or one it was raised from, is a fault of the machine (MACHINE_FAULTS), not a bug."""
    while error is not None and getattr(error, "errno", None) not in MACHINE_FAULTS:
        error = error.__cause__ or error.__context__
    return error is not None


class StopRequest:
    """SIGINT (Ctrl-C), SIGTERM, SIGHUP: stop at the next safe point, where a checkpoint is whole; a second: at once.
    A thread that each signal wakes counts them and acknowledges the first at once: Python runs a handler only once
    the main thread is back in Python, which a long call into C (128 games' reset: a minute on a busy CPU) delays,
    and two signals before that would be one call of the handler."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    latest = None  # the StopRequest of the run in progress, whose signals the thread counts

    def __init__(self):
        self.signal_name, self.signals, self.at_once, self.stopped = None, 0, False, False
        for signum in self.SIGNALS:
            signal.signal(signum, self._handle)
        if StopRequest.latest is None:  # once in a process: Python writes each signal's number to this pipe
            read, write = os.pipe()
            os.set_blocking(write, False)
            signal.set_wakeup_fd(write)
            threading.Thread(target=StopRequest._count, args=(read,), daemon=True).start()
        StopRequest.latest = self

    @staticmethod
    def _count(read: int) -> None:
        while numbers := os.read(read, 64):
            for number in (number for number in numbers if number in StopRequest.SIGNALS):
                request, name = StopRequest.latest, signal.Signals(number).name
                request.signals += 1
                if request.signals == 1:
                    say(
                        f"stopping at the next safe point ({name}; a second signal stops at once, without a checkpoint)"
                    )
                elif request.signals == 2:
                    request.at_once = True
                    _thread.interrupt_main(number)  # the handler runs again, and stops the run

    def _handle(self, signum, frame):  # in the main thread
        self.signal_name = self.signal_name or signal.Signals(signum).name
        if self.at_once and not self.stopped:
            self.stopped = True
            raise KeyboardInterrupt

    def __bool__(self) -> bool:
        return self.signal_name is not None


class ActionLog:
    """Every action a run sent to its envs, a (steps, num_envs) uint8 array in the checkpoint. The emulators' states
    cannot be saved, so --resume plays the games again from the run's seed with these actions, step for step to where
    the checkpoint left them (ale-py's games are deterministic given the seed and the actions): a part of the run's
    state as any other, named in start_training. Without one (DQN), a resumed run starts fresh games."""

    def __init__(self, num_envs: int, chunk_steps: int = 4096):
        self.chunk_steps, self.num_envs = chunk_steps, num_envs
        self.chunks, self.filled, self.restored = [np.zeros((chunk_steps, num_envs), np.uint8)], 0, 0

    def append(self, sent: np.ndarray) -> None:
        if self.filled == len(self.chunks[-1]):
            self.chunks.append(np.zeros((self.chunk_steps, self.num_envs), np.uint8))
            self.filled = 0
        self.chunks[-1][self.filled] = sent
        self.filled += 1

    def replay(self):
        """The restored checkpoint's actions, step by step (none in a fresh run)."""
        for sent in self.chunks[0][: self.restored]:
            yield sent.astype(np.int64)

    def state_dict(self) -> dict:
        import torch

        return {"actions": torch.from_numpy(np.concatenate([*self.chunks[:-1], self.chunks[-1][: self.filled]]))}

    def load_state_dict(self, state: dict) -> None:
        self.chunks = [state["actions"].numpy().copy()]  # the next append starts a new chunk
        self.restored = self.filled = len(self.chunks[0])


class Run:
    """A run's folder and what keeps it safe: TensorBoard (run.writer), status.json, the console (log_progress),
    checkpoints (start_training, save_checkpoint), the safe stop (stop_requested), `with run:` the loop, finish."""

    def __init__(self, args, script: Script):
        from torch.utils.tensorboard import SummaryWriter

        self.args, self.script, self.parts, self.step, self.crash, self.unsaved = args, script, {}, 0, None, None
        # TensorBoard's writer thread raises a write error (a full disk) again in the loop, where the run records it
        threading.excepthook = lambda hook: issubclass(hook.exc_type, OSError) or threading.__excepthook__(hook)
        name = f"{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
        self.dir = args.resume or os.path.join("runs", name)
        self.model_path = os.path.join(self.dir, f"{args.exp_name}.pt")
        self.checkpoint_path = os.path.join(self.dir, "checkpoint.pt")
        self.activations_dir = os.path.join(self.dir, "activations") if args.save_activations else None
        self.checkpoint = self.saved_step = None  # the checkpoint to restore; the step of the one on disk
        if args.resume is None:
            try:
                os.makedirs(self.dir)
            except FileExistsError:
                say(f"error: {self.dir} exists already; a run never overwrites another", error=True)
                sys.exit(EXIT_BAD_ARGUMENTS)
            with open(os.path.join(self.dir, "args.json"), "w") as f:
                json.dump(vars(args), f, indent=2)
        else:
            self.checkpoint = checked_load(self.checkpoint_path, "checkpoint", script)
            self.saved_step = self.checkpoint["global_step"]
            self.stopped_status = read_run_folder(self.dir)[1]  # what the folder says again if the resume is refused
        if args.track:  # wandb is imported only when asked for
            wandb, name = importlib.import_module("wandb"), os.path.basename(os.path.normpath(self.dir))
            wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, config=vars(args), name=name,
                       sync_tensorboard=True, save_code=True)  # fmt: skip
        # a resumed run's TensorBoard hides what the stopped one logged after its checkpoint
        self.writer = SummaryWriter(self.dir, purge_step=self.saved_step + 1 if self.checkpoint else None)
        if args.resume is None:
            table = "\n".join(f"|{key}|{value}|" for key, value in vars(args).items())
            self.writer.add_text("hyperparameters", "|param|value|\n|-|-|\n" + table)
        write_status(self.dir, script=script.name, status="running", message=None, host=socket.gethostname(),
                     pid=os.getpid())  # fmt: skip
        self.stop_requested, self.recent_returns = StopRequest(), deque(maxlen=20)  # latest scores, for the console
        self.games_seed = args.seed  # a resumed run's games: start_training

    def start_training(self, network, **parts) -> int:
        """Names the stateful parts a checkpoint holds, restores them when resumed; returns the step to start from."""
        import torch

        self.parts, self.start_time = {"network": network, **parts}, time.time()
        self.last_print = self.start_time
        parameters, device = sum(p.numel() for p in network.parameters()), next(network.parameters()).device
        say(f"device {device} | {type(network).__name__} of {parameters:,} parameters | run folder {self.dir}")
        if self.checkpoint is None:
            return 0
        checkpoint, self.checkpoint = self.checkpoint, None
        missing = [name for name in self.parts if name not in checkpoint]
        if missing:
            say(f"error: {self.checkpoint_path} has no {', '.join(missing)}: written by an older {self.script.name}, "
                "which this one cannot continue", error=True)  # fmt: skip
            write_status(self.dir, **self.stopped_status)
            sys.exit(EXIT_BAD_ARGUMENTS)
        for name, part in self.parts.items():
            (part.set_state if isinstance(part, torch.Generator) else part.load_state_dict)(checkpoint[name])
        rng = checkpoint["rng"]
        random.setstate(rng["python"])
        np.random.set_state((rng["numpy"][0], rng["numpy"][1].numpy(), *rng["numpy"][2:]))
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.recent_returns.extend(checkpoint["recent_returns"])
        self.start_time -= checkpoint["elapsed_time"]
        self.step = step = checkpoint["global_step"]
        replayed = sum(len(part.chunks[0]) for part in self.parts.values() if isinstance(part, ActionLog))
        if replayed:  # the games are played again from the run's own seed (ActionLog)
            say(f"resumed at step {step:,} from {self.checkpoint_path}; replaying its games' {replayed:,} steps")
            return step
        # the games in progress were not saved: fresh games, seeded anew for each (seed, step)
        seed = np.random.SeedSequence([self.args.seed, step]).generate_state(1)[0]
        self.games_seed = int(seed) % (2**31 - self.args.num_envs)
        say(f"resumed at step {step:,} from {self.checkpoint_path}")
        return step

    def training_state(self, step: int) -> dict:
        """All that --resume restores: the parts' states, the progress and the random generators."""
        import torch

        numpy_rng = np.random.get_state()
        rng = {"python": random.getstate(), "numpy": (numpy_rng[0], torch.from_numpy(numpy_rng[1]), *numpy_rng[2:])}
        rng["torch"] = torch.get_rng_state()
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        state = {"script": self.script.name, "global_step": step, "recent_returns": list(self.recent_returns)}
        state.update(rng=rng, elapsed_time=time.time() - self.start_time)
        for name, part in self.parts.items():
            state[name] = part.get_state() if isinstance(part, torch.Generator) else part.state_dict()
        return state

    def save_checkpoint(self, step: int, checkpoint: bool = True) -> None:
        """Writes the model, then (unless told not to) the checkpoint that continues the run exactly."""
        if checkpoint and step == self.saved_step:
            return  # on disk already
        atomic_save(self.parts["network"].state_dict(), self.model_path)
        if checkpoint:
            try:
                atomic_save(self.training_state(step), self.checkpoint_path)
            except OSError as error:
                raise OSError(f"the model was saved to {self.model_path}, but {error}") from error
            write_status(self.dir, checkpoint_step=step)
            self.saved_step = step

    def log_progress(self, step: int) -> None:
        """charts/SPS, and every few seconds one console line: progress, speed, time left and the latest scores."""
        self.step, sps = step, step / max(time.time() - self.start_time, 1e-9)
        self.writer.add_scalar("charts/SPS", int(sps), step)
        if time.time() - self.last_print > 5:
            self.last_print, total, scores = time.time(), self.args.total_timesteps, self.recent_returns
            returns = f"{np.mean(scores):.1f} (mean of last {len(scores)})" if scores else "-"
            eta = (total - step) / max(sps, 1e-9) / 60
            say(f"step {step:,}/{total:,} ({100 * step / total:.1f}%) | {sps:,.0f} SPS | ETA {eta:.0f} min | "
                f"return {returns}")  # fmt: skip

    def __enter__(self):  # with run: around the training loop
        return self

    def __exit__(self, kind, error, trace) -> bool:
        """A second signal or a fault of the machine ends the loop (finish says so); a bug is recorded, then goes on."""
        if isinstance(error, Exception):
            self.crash = error
            if not machine_fault(error):  # the step of the training function, where it failed
                self.finish(trace.tb_frame.f_locals.get("global_step", self.step), training_over=False, device=None)
                return False
        return isinstance(error, (Exception, KeyboardInterrupt))

    def finish(self, step: int, training_over: bool, device) -> int:
        """Keeps what the run reached, evaluates it when its training is over, records how it ended: the exit status."""
        stop = self.stop_requested
        whole = self.crash is None and not stop.at_once  # stopped between two steps: a checkpoint continues it
        if self.args.save_model:
            try:
                self.save_checkpoint(step, checkpoint=whole)
                say(f"model saved to {self.model_path}")
            except KeyboardInterrupt:  # a second signal while saving: the previous files stay as they were
                whole = False
            except OSError as error:  # a full disk, say: the previous files stay as they were
                self.crash, self.unsaved = self.crash or error, error
        if self.crash is not None:
            return self.record(step, "crashed")
        if not (whole and training_over):
            how = f"interrupted by {stop.signal_name}" + " (twice: at once)" * stop.at_once
            if not self.args.save_model:
                then = "keeping what was logged (checkpoints need --save-model)"
            elif self.saved_step is None:
                then = "the weights are saved; no checkpoint to continue from (stopped at once)"
            else:  # the checkpoint of this step (a safe stop), or an earlier one (a second signal)
                then = f"continue from step {self.saved_step:,} with python {self.script.name} --resume {self.dir}"
            return self.record(step, "interrupted", f"{how} at step {step:,}: {then}")
        if self.args.save_model and self.args.eval_episodes > 0:
            try:
                complete = evaluation(self.script, self.args, self.dir, device, self.writer, stop, step)
            except Exception as error:
                self.crash = error
                if self.record(step, "crashed") and not machine_fault(error):
                    raise
                return EXIT_CRASHED
            if not complete:
                message = f"evaluation interrupted by {stop.signal_name}: --resume {self.dir} plays it again"
                return self.record(step, "interrupted", message)
        if os.path.exists(self.checkpoint_path):
            os.remove(self.checkpoint_path)  # a finished run is not resumed: its model stays (DQN: GBs of replay go)
            write_status(self.dir, checkpoint_step=None)
        return self.record(step, "finished", f"finished at step {step:,}")

    def record(self, step: int, outcome: str, message: str = "") -> int:
        """Writes how the run ended to status.json and TensorBoard, says it, and returns the exit status."""
        trace = "".join(traceback.format_exception(self.crash)) if outcome == "crashed" else None
        if outcome == "crashed":
            message = f"crashed at step {step:,}: {type(self.crash).__name__}: {self.crash}"
            message += f"; and {self.unsaved}" if self.unsaved not in (None, self.crash) else ""
        try:
            write_status(self.dir, status=outcome, step=step, message=message,
                         signal=self.stop_requested.signal_name, traceback=trace)  # fmt: skip
        except OSError as failure:  # a full disk: the console still says how the run ended
            message += f" (status.json not updated: {failure})"
        try:
            self.writer.add_text("run/status", f"{outcome}: {message}", step)
            self.writer.close()
        except Exception as failure:  # its writer thread's error (a full disk), raised again here
            message += f" (TensorBoard's last events not written: {failure})"
        if outcome == "crashed":
            then = "" if machine_fault(self.crash) else "; Python's traceback follows"
            say(f"error: {message} (recorded in {self.dir}/status.json){then}", error=True)
        else:
            say(f"{message}\nrun folder: {self.dir}")
        return {"finished": 0, "interrupted": EXIT_INTERRUPTED, "crashed": EXIT_CRASHED}[outcome]


def evaluation(script: Script, args, run_dir: str, device, writer, stop, model_step: int) -> bool:
    """The saved model's games, logged after earlier evaluations'; True, and recorded in status.json, when all ended."""
    first = read_run_folder(run_dir)[1].get("evaluation_games_logged", 0)
    videos = GameVideos(run_dir, model_step, first, args.track) if args.capture_video else None
    try:
        scores = script.evaluate(os.path.join(run_dir, f"{args.exp_name}.pt"), args, device, stop, videos)
    finally:
        if videos is not None:
            videos.close()
    for index, score in enumerate(scores):
        writer.add_scalar("eval/episodic_return", score, first + index)
    say(f"evaluation: mean return {np.mean(scores or np.nan):.1f} over {len(scores)} of {args.eval_episodes} games")
    complete = (
        {"evaluation": {"returns": scores, "of": args.eval_episodes}} if len(scores) == args.eval_episodes else {}
    )
    write_status(run_dir, evaluation_games_logged=first + len(scores), **complete)  # else the one recorded before stays
    return bool(complete)


class GameVideos:
    """--capture-video: each evaluation game in colour, videos/step_<model step>_game_<i>.mp4 in the run folder (i counts
    the run's evaluation games, as TensorBoard's x does, from 1), one frame per agent step (4 emulator frames,
    max-pooled) at 15 a second: the game's real speed. The script's colour env plays beside the agent's with the same
    seed and actions; each video is written whole when its game ends."""

    def __init__(self, run_dir: str, model_step: int, games_before: int, track: bool):
        import av  # PyAV: FFmpeg's encoders come in its wheel

        self.av, self.folder, self.model_step, self.track = av, os.path.join(run_dir, "videos"), model_step, track
        self.games_before = games_before  # played by the run's earlier evaluations
        self.screens, self.encoders = None, {}  # env -> (buffer, container, stream); None once its game is saved

    def play_along(self, screens, seed: int) -> None:
        """Starts the colour env's games with the agent's seed."""
        self.screens = screens
        self.add(screens.reset(seed=seed)[0])

    def step(self, actions, info: dict) -> None:
        """Plays the agent's actions in the colour games, which must stay at the agent's frames."""
        frames, _, _, _, screen_info = self.screens.step(actions)
        if not np.array_equal(screen_info["episode_frame_number"], info["episode_frame_number"]):
            raise RuntimeError("the colour games of --capture-video left the agent's games")
        self.add(frames)

    def add(self, frames: np.ndarray) -> None:
        for env, frame in enumerate(frames[:, -1]):  # (num_envs, 1, 210, 160, 3)
            if env not in self.encoders:
                buffer = io.BytesIO()
                container = self.av.open(buffer, "w", format="mp4")
                stream = container.add_stream("libx264", rate=15)  # 60 emulator frames a second, 4 per step
                stream.width, stream.height, stream.pix_fmt = frame.shape[1], frame.shape[0], "yuv420p"
                self.encoders[env] = buffer, container, stream
            if self.encoders[env] is not None:
                buffer, container, stream = self.encoders[env]
                container.mux(stream.encode(self.av.VideoFrame.from_ndarray(frame, format="rgb24")))

    def save(self, env: int, game: int) -> str:
        """Ends the video of env's game (only its first is recorded), writes it whole, and returns its path."""
        buffer, container, stream = self.encoders[env]
        self.encoders[env] = None
        container.mux(stream.encode())  # the frames the encoder still holds
        container.close()
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, f"step_{self.model_step}_game_{self.games_before + game}.mp4")
        atomic_save(buffer.getvalue(), path)
        if self.track:
            wandb = importlib.import_module("wandb")
            wandb.log({f"videos/game_{self.games_before + game}": wandb.Video(path, format="mp4")})
        return path

    def close(self) -> None:
        if self.screens is not None:
            self.screens.close()


def atomic_save(obj, path: str) -> None:
    """torch.save (or bytes written) to a temporary name, synced, renamed: whole or absent. A failed write raises
    OSError naming the file."""
    import torch

    try:
        with open(path + ".tmp", "wb") as f:
            f.write(obj) if isinstance(obj, bytes) else torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(path + ".tmp", path)
    except BaseException as error:  # a full disk, a second signal: no half-written file is left behind
        if os.path.exists(path + ".tmp"):
            os.remove(path + ".tmp")
        if not isinstance(error, Exception):
            raise
        cause = error
        while cause is not None and not isinstance(cause, (OSError, KeyboardInterrupt)):
            cause = cause.__cause__ or cause.__context__  # torch's zip writer wraps what its writes raise
        if isinstance(cause, KeyboardInterrupt):  # a second signal in the middle of one of torch's writes
            raise KeyboardInterrupt from error
        full = getattr(cause, "errno", None) in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
        raise OSError(f"could not write {path}: {cause or error}" + (" (the disk is full?)" if full else "")) from error


def write_status(run_dir: str, **fields) -> None:
    """Updates the run's status.json (how far the run is and how it ended), whole or not at all."""
    status = read_run_folder(run_dir)[1] | fields | {"updated": time.strftime("%Y-%m-%d %H:%M:%S")}
    with open(os.path.join(run_dir, "status.json.tmp"), "w") as f:
        json.dump(status, f, indent=2)
    os.replace(os.path.join(run_dir, "status.json.tmp"), os.path.join(run_dir, "status.json"))


def read_run_folder(run_dir: str) -> tuple[dict | None, dict]:
    """(args.json, status.json) of a run folder as dicts; a missing or damaged file reads as None, respectively {}."""
    contents = []
    for name in ("args.json", "status.json"):
        try:
            with open(os.path.join(run_dir, name)) as f:
                contents.append(dict(json.load(f)))
        except (OSError, ValueError, TypeError):  # missing, not JSON, or not an object
            contents.append(None)
    return contents[0], contents[1] or {}


def atari_game(env_id: str) -> str:
    """The ale-py ROM id of an env id ("Breakout-v5", "ALE/Breakout-v5", "breakout" -> "breakout"), or a ValueError
    that names the id that works: for gym's older ids (BreakoutNoFrameskip-v4, Breakout-v4, ...) and for a typo."""
    from ale_py.roms import get_all_rom_ids

    roms = {rom.replace("_", ""): rom for rom in get_all_rom_ids()}  # "SpaceInvaders" finds "space_invaders"
    parts = re.fullmatch(r"(?:ALE/)?(\w+?)(NoFrameskip|Deterministic)?(-ram)?(?:-v(\d+))?", env_id)
    name = (parts[1] if parts else env_id).replace("_", "").lower()
    if name not in roms:
        close = [v5_id(roms[match]) for match in difflib.get_close_matches(name, roms, n=3)]
        raise ValueError(f"unknown Atari game '{env_id}'" + (f"; did you mean {', '.join(close)}?" if close else ""))
    if parts[2] or parts[3] or parts[4] not in (None, "5"):
        raise ValueError(f"--env-id {env_id} is a gym id; the scripts make the game's env with their own settings "
                         f"(docs/protocol.md): use --env-id {v5_id(roms[name])}")  # fmt: skip
    return roms[name]


def v5_id(rom: str) -> str:
    """The env id the scripts take for a ROM: "space_invaders" -> "SpaceInvaders-v5"."""
    return "".join(word.capitalize() for word in rom.split("_")) + "-v5"


IN_RANGE = {
    "must be positive": lambda value: 0 < value < math.inf,
    "must be >= 0": lambda value: 0 <= value < math.inf,
    "must lie in [0, 1]": lambda value: 0 <= value <= 1,
    "must lie in (0, 1]": lambda value: 0 < value <= 1,
    "must lie in [0, 1)": lambda value: 0 <= value < 1,
}
SHARED_RANGES = {
    "must be positive": ("total_timesteps", "max_episode_frames", "num_envs", "learning_rate", "hidden_dim"),
    "must be >= 0": ("eval_episodes", "checkpoint_interval", "diagnostics_interval", "dormant_tau"),
    "must lie in [0, 1]": ("gamma",),
    "must lie in (0, 1]": ("dead_threshold",),  # a local gradient
    "must lie in [0, 1)": ("repeat_action_probability",),  # at 1 the agent would never control the game
}


def check_args(args, script: Script) -> None:
    """Sets --diagnostics-interval, when not given, to a tenth of the run; then raises ValueError with a one-line
    reason at the first argument out of its range or against a rule."""
    if args.diagnostics_interval is None:  # args.json records the value used
        args.diagnostics_interval = max(args.total_timesteps // 10, 1)
    atari_game(args.env_id)
    for words, names in [*SHARED_RANGES.items(), *script.argument_ranges.items()]:
        for name in names:  # None: an optional argument not given
            if getattr(args, name) is not None and not IN_RANGE[words](getattr(args, name)):
                raise ValueError(f"--{name.replace('_', '-')} {words} (got {getattr(args, name)})")
    highest_seed = 2**31 - args.num_envs - args.eval_episodes  # game i is seeded with seed + i, ale-py's below 2^31
    plain_name = args.exp_name and os.sep not in args.exp_name and args.exp_name not in (".", "..")
    shared = [
        (not plain_name, "--exp-name must be a plain name"),
        (not 0 <= args.seed <= highest_seed,
         f"--seed must lie in [0, {highest_seed}] (got {args.seed}): game i is seeded with seed + i"),
        (args.checkpoint_interval > 0 and not args.save_model, "--checkpoint-interval needs --save-model"),
        (args.eval_only and args.resume is None, "--eval-only needs --resume RUN_DIR, the run whose model it plays"),
        (args.eval_only and args.eval_episodes == 0, "--eval-only needs --eval-episodes of at least 1"),
        (args.track and importlib.util.find_spec("wandb") is None, "--track needs wandb (pip install wandb)"),
        (args.capture_video and importlib.util.find_spec("av") is None, "--capture-video needs PyAV (pip install av)"),
        (args.capture_video and (args.eval_episodes == 0 or not (args.save_model or args.eval_only)),
         "--capture-video records the evaluation games: it needs --save-model and --eval-episodes of at least 1"),
    ]  # fmt: skip
    for broken, message in shared + script.argument_rules(args):
        if broken:
            raise ValueError(message)


def checked_load(path: str, what: str, script: Script, layers: set | None = None) -> dict:
    """A checkpoint's or (given its layers) a model's contents, or a ValueError saying what is wrong with the file."""
    import torch

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        size = os.path.getsize(path)
        raise ValueError(f"{path}: damaged: {'empty' if size == 0 else f'{size:,} bytes torch cannot read'}") from None
    if not isinstance(saved, dict) or (set(saved) != layers if layers else saved.get("script") != script.name):
        raise ValueError(f"{path}: not a {what} of {script.name}")
    return saved


CHANGEABLE = {"cuda", "eval_episodes", "capture_video"}  # the arguments a resumed run takes from its command line


def resumed_args(given, given_names: set[str], script: Script):
    """The arguments of the run that --resume names (its args.json), once it is clear that it can be continued."""
    run_dir = given.resume
    saved, status = read_run_folder(run_dir)
    if saved is None or not status:
        raise ValueError(f"--resume {run_dir}: not a run folder (no readable args.json and status.json)")
    if status.get("script") != script.name:
        raise ValueError(f"--resume {run_dir}: a run of {status.get('script')}, not of {script.name}")
    for name in sorted(given_names - {"resume", "eval_only", *CHANGEABLE}):  # given on the command line
        raise ValueError(f"--resume continues a run with its own arguments: --{name.replace('_', '-')} cannot change "
                         "(only --cuda/--no-cuda, --eval-episodes and --capture-video can)")  # fmt: skip
    args = script.Args(**{name: value for name, value in saved.items() if name in script.Args.__dataclass_fields__})
    args.resume, args.eval_only = run_dir, given.eval_only
    for name in given_names & CHANGEABLE:  # given beside --resume, they replace the run's own
        setattr(args, name, getattr(given, name))
    if status.get("status") == "running" and status.get("host") == socket.gethostname() and alive(status["pid"]):
        raise ValueError(f"--resume {run_dir}: the run is still running (process {status['pid']})")
    model_path, checkpoint_path = os.path.join(run_dir, f"{args.exp_name}.pt"), os.path.join(run_dir, "checkpoint.pt")
    if args.eval_only and not os.path.exists(model_path):
        raise ValueError(f"--resume {run_dir} --eval-only: the run saved no model (it ran without --save-model)")
    if args.eval_only:
        checked_load(model_path, "model", script, set(script.make_network(args, 1).state_dict()))
    elif status.get("status") == "finished":
        raise ValueError(f"--resume {run_dir}: the run finished already (--eval-only evaluates its model again)")
    elif not os.path.exists(checkpoint_path):
        why = "it was stopped at once, before any checkpoint" if args.save_model else "checkpoints need --save-model"
        if status.get("status") == "crashed":
            why = "it crashed before any checkpoint: see its status.json"
        elif status.get("status") == "running":  # its process is gone: killed, or failed before its training loop
            why = "its process ended before any checkpoint"
        raise ValueError(f"--resume {run_dir}: no checkpoint to continue from ({why})")
    else:
        checked_load(checkpoint_path, "checkpoint", script)
    return args


def alive(pid: int) -> bool:
    """Whether the process is there (signal 0 only asks); a run killed without a word continues from its checkpoint."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # there, but another user's
        pass
    return True


def parse_args(script: Script, argv: list[str] | None = None):
    """The command line, checked before any work starts: a bad argument stops the script with one line."""
    import tyro

    argv = sys.argv[1:] if argv is None else argv
    try:
        args = tyro.cli(script.Args, args=argv)
    except BrokenPipeError:  # --help | head: the reader had enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    names = {token[2:].split("=")[0].replace("-", "_") for token in argv if token.startswith("--")}  # given flags
    names = {name[3:] if name.startswith("no_") and not hasattr(script.Args, name) else name for name in names}
    try:
        if args.resume is not None:
            args = resumed_args(args, names, script)
        check_args(args, script)
    except ValueError as error:
        say(f"error: {error}", error=True)
        sys.exit(EXIT_BAD_ARGUMENTS)
    return args


def main(script: Script, train: Callable) -> None:
    """A script's command line: train, or with --resume RUN --eval-only only evaluate; exits with the run's status."""
    import torch
    from torch.utils.tensorboard import SummaryWriter

    args = parse_args(script)
    if not args.eval_only:
        sys.exit(train(args))
    with SummaryWriter(args.resume) as writer:  # the run's own status does not change
        device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")
        step = read_run_folder(args.resume)[1].get("step", 0)  # where the run stopped, with its model saved
        try:
            complete = evaluation(script, args, args.resume, device, writer, StopRequest(), step)
        except OSError as error:
            if not machine_fault(error):
                raise
            say(f"error: {error}", error=True)
            sys.exit(EXIT_CRASHED)
    say(f"run folder: {args.resume}")
    sys.exit(0 if complete else EXIT_INTERRUPTED)
