"""DQN on Atari with the Hadamard representation (Kooi, Hoogendoorn, Francois-Lavet 2024, arXiv 2406.09079).

Deep Q-learning (Mnih et al. 2015: replay memory, target network, epsilon-greedy) on one game, with a Q-network
whose final hidden layer is the element-wise product of two tanh layers, h = tanh(W1 z + b1) * tanh(W2 z + b2),
on top of the Nature-CNN convolutions; --no-hadamard gives the plain layer h = tanh(W z + b). The replay memory
keeps each 84x84 frame once (about 7 GB for the default 1,000,000 transitions) and rebuilds the frame stacks
when it samples them. A lost life is terminal for learning; a game cut by the time limit is not.

Run:
    python dqn_atari_hadamard.py --env-id Breakout-v5
    python dqn_atari_hadamard.py --env-id Breakout-v5 --no-hadamard --hidden-dim 1024   # parameter-matched baseline
    python dqn_atari_hadamard.py --env-id Breakout-v5 --activation relu --no-hadamard   # the classic Nature-CNN
Watch:  tensorboard --logdir runs      Diagnostics offline:  python diagnostics.py runs/<run>
Stop:   Ctrl-C or SIGTERM saves and exits 75 (with --save-model); continue with --resume runs/<run>
"""

import dataclasses
import difflib
import json
import math
import os
import random
import re
import signal
import socket
import sys
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter

import diagnostics


@dataclass
class Args:
    exp_name: str = os.path.basename(__file__)[: -len(".py")]
    """the name of this experiment (part of the run folder's name)"""
    seed: int = 1
    """seed of the experiment"""
    torch_deterministic: bool = True
    """if toggled, `torch.backends.cudnn.deterministic=True`"""
    cuda: bool = True
    """if toggled, cuda is used when available"""
    track: bool = False
    """if toggled, the run is tracked with Weights and Biases (needs `pip install wandb`)"""
    wandb_project_name: str = "hadamard-rl"
    """the wandb project name"""
    wandb_entity: str | None = None
    """the entity (team) of the wandb project"""
    save_model: bool = False
    """whether to save the model and a checkpoint to the run folder (at the end, or when stopped) and evaluate it"""
    eval_episodes: int = 10
    """full games played by the evaluation after training (with --save-model), epsilon-greedy with epsilon end_e"""
    checkpoint_interval: int = 0
    """agent steps between checkpoints (with --save-model), each replacing the last; 0: only when the run stops"""
    resume: str | None = None
    """a run folder to continue from its checkpoint, with the run's own arguments (see README: Long runs)"""
    eval_only: bool = False
    """with --resume: only play the evaluation games of the run's saved model"""

    # Algorithm specific arguments
    env_id: str = "Breakout-v5"
    """the Atari game, e.g. Breakout-v5, Pong-v5, SpaceInvaders-v5 (ale-py ROM ids work too)"""
    total_timesteps: int = 10_000_000
    """total agent steps of the experiment (one step = 4 frames)"""
    max_episode_frames: int = 108_000
    """the time limit of a game in frames (108,000 frames = 30 minutes of play; small values make short tests)"""
    fire_on_life_loss: bool = True
    """if toggled, FIRE is pressed for the agent after every lost life, as the references do (games with FIRE only). The forced step is not the agent's: nothing learns from it and episodic_length (agent steps) leaves it out, but its reward is in the score and global_step counts it, as it counts every env step (reset steps too)"""
    repeat_action_probability: float = 0.0
    """sticky actions: the chance that an env repeats its previous action instead (0 as in the references; 0.25 is the protocol of Machado et al. 2018 and the -v5 default)"""
    learning_rate: float = 1e-4
    """the learning rate of the optimizer (Adam)"""
    num_envs: int = 1
    """the number of parallel game environments (this DQN plays one game at a time)"""
    buffer_size: int = 1_000_000
    """the replay memory's size in frames: as many transitions, less one per game held (its final frame)"""
    gamma: float = 0.99
    """the discount factor gamma"""
    tau: float = 1.0
    """the target network update rate (1.0 copies the Q-network)"""
    target_network_frequency: int = 1000
    """agent steps between updates of the target network"""
    batch_size: int = 32
    """the batch size of transitions sampled from the replay memory"""
    start_e: float = 1.0
    """the starting epsilon for exploration"""
    end_e: float = 0.01
    """the ending epsilon for exploration"""
    exploration_fraction: float = 0.10
    """the fraction of `total_timesteps` it takes to go from start_e to end_e"""
    learning_starts: int = 80_000
    """agent steps played before learning starts"""
    train_frequency: int = 4
    """agent steps between gradient steps"""

    # Representation (the paper's method by default)
    activation: Literal["tanh", "relu", "sigmoid"] = "tanh"
    """the activation of the final hidden layer (the convolutions always use ReLU)"""
    hadamard: bool = True
    """if toggled, the final hidden layer is the Hadamard product of two layers; --no-hadamard gives one layer"""
    hidden_dim: int = 512
    """units of the final hidden layer (1024 with --no-hadamard matches the Hadamard layer's parameters)"""

    # Diagnostics (dead neurons and effective rank, see diagnostics.py)
    diagnostics_interval: int = 500_000
    """agent steps between diagnostics captures (0 turns diagnostics off)"""
    diagnostics_samples: int = 1024
    """probe states per capture (at least hidden_dim, so that the rank is measurable)"""
    save_activations: bool = False
    """if toggled, each capture's activations are saved to <run>/activations/step_<step>.npz"""
    dead_threshold: float = 0.02
    """a unit is dead (saturated) when its activation's slope at its output is below this on every probe state"""
    dormant_tau: float = 0.025
    """a unit is tau-dormant when its normalised mean |activation| is at most this (ReDo)"""


def atari_game(env_id: str) -> str:
    """The ale-py ROM id of an env id ("Breakout-v5" and "ALE/Breakout-v5" -> "breakout"), or a clear error."""
    from ale_py.roms import get_all_rom_ids

    name = re.sub(r"-v\d+$", "", env_id.split("/")[-1])
    game = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower() if not name.islower() else name
    games = get_all_rom_ids()
    if game not in games:
        close = difflib.get_close_matches(game, games, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown Atari game '{env_id}'{hint}")
    return game


def make_env(env_id: str, num_envs: int, max_episode_frames: int = 108_000, repeat_action_probability: float = 0.0):
    """ale-py's C++ vector env with the usual Atari preprocessing.

    Frame skip 4 with a max-pool of the last two frames, 84x84 grayscale, stacks of 4 frames (zero-padded at a
    game's start), up to 30 no-op starts, FIRE at reset where the game needs it, sticky actions with
    repeat_action_probability (0: none), and a time limit of max_episode_frames frames. Rewards come raw
    (full-game scores are kept; learning clips them to their sign), a lost life is not an episode end here (the
    loop detects it from info["lives"] and presses FIRE after it through EpisodeTracker), and NEXT_STEP autoreset
    means the step after an episode end only resets that env. Seed it with envs.reset(seed=...).
    """
    from ale_py.vector_env import AtariVectorEnv

    envs = AtariVectorEnv(
        game=atari_game(env_id),
        num_envs=num_envs,
        frameskip=4,
        maxpool=True,
        img_height=84,
        img_width=84,
        grayscale=True,
        stack_num=4,
        noop_max=30,
        use_fire_reset=True,
        repeat_action_probability=repeat_action_probability,
        max_num_frames_per_episode=max_episode_frames,
        reward_clipping=False,
        episodic_life=False,
        life_loss_info=False,
    )
    return envs


def find_fire_action(envs) -> int | None:
    """The index of FIRE in the env's action set, or None when the game has no FIRE."""
    from ale_py import Action

    action_set = list(envs.ale.get_action_set())
    return action_set.index(Action.FIRE) if Action.FIRE in action_set else None


ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid}


class EpisodeTracker:
    """Per-env bookkeeping of ale-py's vector env: raw full-game scores, lost lives, reset and forced FIRE steps.

    A game's score adds up over all its lives; a lost life is terminal for learning only. With NEXT_STEP
    autoreset, the step after a game ends (terminated or truncated) only resets that env: it is no transition.
    Given the game's fire_action (the references' protocol), the step after a lost life that did not end the game
    is a forced FIRE, which serves the next ball: the loop plays it by sending with_forced_fire(actions). It is no
    transition either (not the agent's action: nothing learns from it and episodic_length leaves it out), but its
    reward counts in the game's score.
    """

    def __init__(self, num_envs: int, lives: np.ndarray, fire_action: int | None = None):
        self.lives = lives.copy()
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self.lengths = np.zeros(num_envs, dtype=np.int64)
        self.resetting = np.zeros(num_envs, dtype=bool)
        self.fire_action = fire_action
        self.forced_fire = np.zeros(num_envs, dtype=bool)  # the envs whose next step is a forced FIRE

    def with_forced_fire(self, actions: np.ndarray) -> np.ndarray:
        """The actions to send: FIRE in the envs whose step is a forced FIRE, the agent's actions elsewhere."""
        if self.fire_action is None:
            return actions
        return np.where(self.forced_fire, self.fire_action, actions).astype(actions.dtype)

    def step(self, rewards, terminations, truncations, lives):
        """Returns (is_transition, life_lost, finished) where finished lists (env, score, length) of ended games."""
        in_game = ~self.resetting  # the agent's steps and the forced FIRE steps
        is_transition = in_game & ~self.forced_fire
        lost = in_game & (lives < self.lives)
        self.lives = lives.copy()
        self.returns += rewards * in_game
        self.lengths += is_transition
        game_over = in_game & (terminations | truncations)
        finished = [(int(i), float(self.returns[i]), int(self.lengths[i])) for i in np.flatnonzero(game_over)]
        self.returns[game_over] = 0.0
        self.lengths[game_over] = 0
        self.resetting = game_over
        self.forced_fire = lost & ~game_over & (self.fire_action is not None)
        return is_transition, lost & is_transition, finished


class QNetwork(nn.Module):
    """Nature-CNN convolutions (ReLU) -> representation -> a linear Q-value head, one output per action.

    The representation is the paper's Hadamard product act(W1 z + b1) * act(W2 z + b2) of two independently
    parameterised layers; with hadamard=False it is the plain layer act(W z + b).
    """

    def __init__(self, num_actions: int, activation: str = "tanh", hadamard: bool = True, hidden_dim: int = 512):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 32, 8, stride=4)
        self.conv2 = nn.Conv2d(32, 64, 4, stride=2)
        self.conv3 = nn.Conv2d(64, 64, 3, stride=1)
        self.act = ACTIVATIONS[activation]
        self.hadamard = hadamard
        if hadamard:
            self.hadamard_a = nn.Linear(64 * 7 * 7, hidden_dim)
            self.hadamard_b = nn.Linear(64 * 7 * 7, hidden_dim)
        else:
            self.dense = nn.Linear(64 * 7 * 7, hidden_dim)
        self.q_head = nn.Linear(hidden_dim, num_actions)

    def layer_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every hidden layer's output by name (diagnostics read these); the last one is the representation."""
        x = x / 255.0
        outputs = {}
        outputs["conv1"] = x = F.relu(self.conv1(x))
        outputs["conv2"] = x = F.relu(self.conv2(x))
        outputs["conv3"] = x = F.relu(self.conv3(x))
        z = x.flatten(1)
        if self.hadamard:
            outputs["hadamard_a"] = a = self.act(self.hadamard_a(z))
            outputs["hadamard_b"] = b = self.act(self.hadamard_b(z))
            outputs["representation"] = a * b
        else:
            outputs["representation"] = self.act(self.dense(z))
        return outputs

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_outputs(x)["representation"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Q-values (batch, num_actions) of uint8 frame stacks (batch, 4, 84, 84)."""
        return self.q_head(self.representation(x))


def status_line(step: int, total_steps: int, start_time: float, recent_returns) -> str:
    """One console line: progress, speed, time left and the latest full-game scores."""
    sps = step / max(time.time() - start_time, 1e-9)
    eta_minutes = (total_steps - step) / max(sps, 1e-9) / 60
    returns = f"{np.mean(recent_returns):.1f} (mean of last {len(recent_returns)})" if recent_returns else "-"
    return (
        f"step {step:,}/{total_steps:,} ({100 * step / total_steps:.1f}%) | {sps:,.0f} SPS | "
        f"ETA {eta_minutes:.0f} min | return {returns}"
    )


# Long runs: signals, checkpoints and how a run ended (see README: Long runs)
EXIT_CRASHED = 1  # an error stopped the run (the traceback is in its status.json)
EXIT_BAD_ARGUMENTS = 2  # nothing was started
EXIT_INTERRUPTED = 75  # a signal stopped the run (EX_TEMPFAIL): --resume continues it


class StopRequest:
    """Ctrl-C (SIGINT), SIGTERM and SIGHUP ask the run to stop at the next safe point; a second one stops it at once.

    The training loop checks it between two steps (DQN) or two rollouts (PPO, PQN), where the run's state is whole
    and a checkpoint can continue it; the evaluation checks it between two env steps.
    """

    def __init__(self):
        self.signal_name = None
        self.at_once = False  # a second signal raised KeyboardInterrupt in the middle of a step
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._handle)

    def _handle(self, signum, frame):
        if self.signal_name is not None:
            self.at_once = True
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def __bool__(self) -> bool:
        return self.signal_name is not None


def saveable(value):
    """value with numpy arrays as tensors (no copy) and random generators as their states, for torch.save."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, np.random.Generator):
        return value.bit_generator.state
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return type(value)(saveable(item) for item in value)
    if isinstance(value, dict):
        return {key: saveable(item) for key, item in value.items()}
    return value


def saveable_vars(obj) -> dict:
    """Every numpy-array, random-generator and scalar attribute of obj (whatever fields its class has)."""
    kinds = (np.ndarray, np.random.Generator, np.generic, bool, int, float, str)
    return {name: saveable(value) for name, value in vars(obj).items() if isinstance(value, kinds)}


def restore_vars(obj, saved: dict) -> None:
    """The reverse of saveable_vars; arrays are copied into obj's own (a replay memory is not allocated twice)."""
    for name, value in saved.items():
        current = getattr(obj, name, None)
        if isinstance(current, np.random.Generator):
            current.bit_generator.state = value
        elif isinstance(current, np.ndarray) and current.shape == tuple(value.shape):
            np.copyto(current, value.numpy())
        else:
            setattr(obj, name, value.numpy() if isinstance(value, torch.Tensor) else value)


def rng_states() -> dict:
    """The states of Python's, numpy's and torch's global random generators (CUDA's too when there is one)."""
    states = {"python": random.getstate(), "numpy": saveable(np.random.get_state()), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(tuple(item.numpy() if isinstance(item, torch.Tensor) else item for item in states["numpy"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def resume_seed(seed: int, step: int, num_envs: int) -> int:
    """The seed of the fresh games a run resumed at `step` starts with: its own for each (seed, step)."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0]) % (2**31 - num_envs)


def atomic_save(obj, path: str) -> None:
    """torch.save to a temporary name, synced, then renamed: the file is whole or absent, never truncated."""
    temporary = path + ".tmp"
    try:
        with open(temporary, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:  # a full disk, a second signal: no half-written file is left behind
        os.remove(temporary)
        raise
    os.replace(temporary, path)


def write_status(run_dir: str, **fields) -> dict:
    """Updates the run's status.json (how far the run is and how it ended), whole or not at all."""
    path = os.path.join(run_dir, "status.json")
    status = {}
    if os.path.exists(path):
        with open(path) as f:
            status = json.load(f)
    status.update(fields, updated=time.strftime("%Y-%m-%d %H:%M:%S"))
    with open(path + ".tmp", "w") as f:
        json.dump(status, f, indent=2)
    os.replace(path + ".tmp", path)
    return status


def end_run(run_dir: str, writer, step: int, outcome: str, message: str, signal_name=None, error=None) -> None:
    """Records how the run ended (status.json, TensorBoard text), says where the run is, exits with its status."""
    write_status(run_dir, status=outcome, step=step, message=message, signal=signal_name, traceback=error)
    writer.add_text("run/status", f"{outcome}: {message}", step)
    writer.close()
    if outcome == "crashed":
        print(f"error: {message} (traceback in {os.path.join(run_dir, 'status.json')})", file=sys.stderr)
    else:
        print(message)
    print(f"run folder: {run_dir}", flush=True)
    sys.exit({"finished": 0, "interrupted": EXIT_INTERRUPTED, "crashed": EXIT_CRASHED}[outcome])


def linear_schedule(start_e: float, end_e: float, duration: float, t: int) -> float:
    """Epsilon at step t: from start_e down to end_e over `duration` steps, then constant."""
    if duration <= 0:
        return end_e
    return start_e + (end_e - start_e) * min(t / duration, 1.0)


class Transitions(NamedTuple):
    obs: torch.Tensor  # (batch, 4, 84, 84) uint8: the frame stacks the agent acted on
    actions: torch.Tensor  # (batch,) int64
    rewards: torch.Tensor  # (batch,) float32, clipped to their sign
    next_obs: torch.Tensor  # (batch, 4, 84, 84) uint8: the frame stacks the env returned
    terminals: torch.Tensor  # (batch,) float32: 1 when the game ended or a life was lost (no bootstrap)


class ReplayBuffer:
    """Replay memory that keeps each 84x84 frame once and rebuilds the 4-frame stacks when it samples.

    A circular array of slots, one frame each. A game fills consecutive slots: its first frame (the newest frame
    of the reset obs), then the newest frame of each next obs. The transition stored at slot i is the one whose
    obs ends with frame i; its next obs ends with frame i + 1; a stack is the frames i-3 .. i, where the frames
    from before the game's start are zeros (ale-py zero-pads the stack at reset). A game's final frame starts no
    transition, so the memory holds `capacity` frames and as many transitions, less one per game held and up to 4
    at the write position (the newest frame, and the 3 oldest transitions, dropped as soon as a frame of their stack
    is overwritten). About 7 KB per transition.
    """

    def __init__(self, capacity: int, seed: int = 0, stack: int = 4, frame_shape: tuple = (84, 84)):
        if capacity < stack + 1:
            raise ValueError(f"the replay buffer needs at least {stack + 1} slots (one stack and its next frame)")
        self.capacity = capacity
        self.stack = stack
        self.frames = np.zeros((capacity, *frame_shape), dtype=np.uint8)
        self.since_start = np.zeros(capacity, dtype=np.uint8)  # frames since the game's start, at most stack-1
        self.actions = np.zeros(capacity, dtype=np.uint8)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminals = np.zeros(capacity, dtype=bool)
        self.valid = np.zeros(capacity, dtype=bool)  # a transition starts at this slot and its frames are all here
        self.num_transitions = 0
        self.size = 0  # slots written so far (up to capacity)
        self.newest = -1  # slot of the newest frame: the obs of the next transition ends with it
        self.starting_game = True  # the next transition is the first of a game: its obs is a reset obs
        self.rng = np.random.default_rng(seed)

    @property
    def nbytes(self) -> int:
        arrays = (self.frames, self.since_start, self.actions, self.rewards, self.terminals, self.valid)
        return sum(array.nbytes for array in arrays)

    def __len__(self) -> int:
        return self.num_transitions

    def _write_frame(self, frame: np.ndarray, since_start: int) -> None:
        slot = (self.newest + 1) % self.capacity
        # the transition stored here and those whose stacks reach back to this slot lose a frame: drop them
        dropped = (slot + np.arange(self.stack)) % self.capacity
        self.num_transitions -= int(self.valid[dropped].sum())
        self.valid[dropped] = False
        self.frames[slot] = frame
        self.since_start[slot] = since_start
        self.newest = slot
        self.size = min(self.size + 1, self.capacity)

    def add(self, obs, next_obs, action, reward, terminal, game_over, is_transition=True) -> int:
        """Stores one transition (obs and next_obs: (4, 84, 84) stacks) and returns its slot.

        reward is stored clipped to its sign; terminal (game over or life lost) stops the bootstrap; game_over
        (terminated or truncated) says that the next transition starts a new game, with a reset obs.
        Within a game, obs must be the previous next_obs: only the first obs of a game is read.
        is_transition=False (a forced FIRE after a lost life) stores the step's frame, so that the stacks around it
        stay exact, but no transition that starts at its slot can be sampled.
        """
        if self.starting_game:
            if obs[:-1].any():
                raise ValueError("a game's first obs must be a reset obs: zero-padded, only its newest frame set")
            self._write_frame(obs[-1], since_start=0)
        slot = self.newest
        self._write_frame(next_obs[-1], since_start=min(int(self.since_start[slot]) + 1, self.stack - 1))
        self.actions[slot] = action
        self.rewards[slot] = np.sign(reward)
        self.terminals[slot] = terminal
        self.valid[slot] = bool(is_transition)
        self.num_transitions += bool(is_transition)
        self.starting_game = bool(game_over)
        return slot

    def get(self, slots: np.ndarray, device: torch.device | str = "cpu") -> Transitions:
        """The transitions stored at these slots as tensors on the device, stacks rebuilt (one gather for the batch)."""
        offsets = np.arange(-self.stack + 1, 2)  # frames i-3 .. i+1: obs is the first 4, next_obs the last 4
        frames = self.frames[(slots[:, None] + offsets) % self.capacity]  # (batch, 5, 84, 84), a copy
        # the slots before a game's start hold another game's frames: zero them, as ale-py zero-pads its reset stack.
        # E.g. two frames after the start f0 (since_start 2): offset -3 is zeroed, -2 .. 1 are kept, so obs is
        # (0, f0, f1, f2) and next_obs (f0, f1, f2, f3)
        frames[offsets < -self.since_start[slots, None].astype(np.int64)] = 0
        frames = torch.from_numpy(frames).to(device)  # copied once: obs and next_obs are views of it
        return Transitions(
            obs=frames[:, :-1],
            actions=torch.from_numpy(self.actions[slots].astype(np.int64)).to(device),
            rewards=torch.from_numpy(self.rewards[slots]).to(device),
            next_obs=frames[:, 1:],
            terminals=torch.from_numpy(self.terminals[slots].astype(np.float32)).to(device),
        )

    def sample_slots(self, batch_size: int) -> np.ndarray:
        """Slots of batch_size transitions drawn uniformly (with replacement) from those stored."""
        if self.num_transitions == 0:
            raise ValueError("the replay buffer holds no transition yet")
        slots = self.rng.integers(0, self.size, batch_size)
        redraw = ~self.valid[slots]
        while redraw.any():  # the few slots without a transition (games' final frames) are drawn again
            slots[redraw] = self.rng.integers(0, self.size, int(redraw.sum()))
            redraw = ~self.valid[slots]
        return slots

    def sample(self, batch_size: int, device: torch.device | str = "cpu") -> Transitions:
        return self.get(self.sample_slots(batch_size), device)

    def sample_states(self, n: int, rng: np.random.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        """n distinct stored obs (frame stacks), drawn with the given generator (diagnostics' probe states)."""
        slots = rng.choice(np.flatnonzero(self.valid), size=n, replace=False)
        return self.get(np.sort(slots), device).obs


def td_targets(rewards, next_q_values, terminals, gamma: float) -> torch.Tensor:
    """Q-learning targets r + gamma * max_a' Q_target(s', a'), without the bootstrap after a terminal step.

    next_q_values (batch, num_actions) are the target network's Q-values of next_obs; terminals is 1 where the game
    ended or a life was lost (a time-limit truncation is not terminal: it bootstraps).
    """
    return rewards + gamma * next_q_values.max(dim=1).values * (1.0 - terminals)


def td_loss(q_values, actions, targets) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean squared TD error of the actions taken, and their Q-values Q(s, a) (batch,)."""
    q_taken = q_values.gather(1, actions[:, None]).squeeze(1)
    return F.mse_loss(targets, q_taken), q_taken


def evaluate(q_network: nn.Module, args: Args, device: torch.device, writer: SummaryWriter, stop) -> list[float]:
    """Plays one full game in each of eval_episodes envs (so that short games are not favoured), epsilon-greedy with
    epsilon end_e; logs and prints each score as its game ends, and stops early when asked (the games played count)."""
    envs = make_env(args.env_id, args.eval_episodes, args.max_episode_frames, args.repeat_action_probability)
    fire_action = find_fire_action(envs) if args.fire_on_life_loss else None
    num_actions = envs.single_action_space.n
    obs, info = envs.reset(seed=args.seed + args.num_envs)  # games the training envs did not start from
    tracker = EpisodeTracker(args.eval_episodes, info["lives"], fire_action)
    scores = {}
    steps, last_print = 0, time.time()
    print(f"evaluation: {args.eval_episodes} games", flush=True)
    try:
        while len(scores) < args.eval_episodes and not stop:
            with torch.no_grad():
                q_values = q_network(torch.as_tensor(obs, device=device))
            explore = torch.rand(args.eval_episodes, device=device) < args.end_e
            random_actions = torch.randint(num_actions, (args.eval_episodes,), device=device)
            actions = torch.where(explore, random_actions, q_values.argmax(dim=1)).cpu().numpy()
            obs, rewards, terminations, truncations, info = envs.step(tracker.with_forced_fire(actions))
            _, _, finished = tracker.step(rewards, terminations, truncations, info["lives"])
            steps += 1
            for env, score, _ in finished:
                if env not in scores:  # only each env's first game counts
                    scores[env] = score
                    writer.add_scalar("eval/episodic_return", score, len(scores) - 1)
                    print(f"evaluation: game {len(scores)}/{args.eval_episodes} returned {score:.1f}", flush=True)
            if time.time() - last_print > 10:
                last_print = time.time()
                print(f"evaluation: {len(scores)}/{args.eval_episodes} games over after {steps:,} steps", flush=True)
    except KeyboardInterrupt:  # a second signal
        pass
    envs.close()
    return list(scores.values())


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def require_positive(args: Args, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{flag(name)} must be positive (got {value})")


def require_non_negative(args: Args, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{flag(name)} must be >= 0 (got {value})")


def require_fraction(args: Args, *names: str) -> None:
    for name in names:
        value = getattr(args, name)
        if not 0 <= value <= 1:
            raise ValueError(f"{flag(name)} must lie in [0, 1] (got {value})")


def check_common_args(args: Args) -> None:
    """The checks of the arguments that the three scripts share, in the same words."""
    atari_game(args.env_id)
    if not args.exp_name or os.sep in args.exp_name or args.exp_name in (".", ".."):
        raise ValueError(f"--exp-name must be a plain name, part of the run folder's name (got '{args.exp_name}')")
    require_positive(args, "total_timesteps", "max_episode_frames", "num_envs", "learning_rate", "hidden_dim")
    require_non_negative(args, "eval_episodes", "checkpoint_interval", "diagnostics_interval", "dormant_tau")
    require_fraction(args, "gamma")
    if not 0 <= args.repeat_action_probability < 1:  # at 1 the agent would never control the game
        raise ValueError(f"--repeat-action-probability must lie in [0, 1) (got {args.repeat_action_probability})")
    # game i is seeded with seed + i (training's first, then the evaluation's), and ale-py takes seeds below 2^31
    highest_seed = 2**31 - args.num_envs - args.eval_episodes
    if not 0 <= args.seed <= highest_seed:
        raise ValueError(f"--seed must lie in [0, {highest_seed}] (got {args.seed}): game i is seeded with seed + i")
    if not (math.isfinite(args.dead_threshold) and 0 < args.dead_threshold <= 1):
        raise ValueError(f"--dead-threshold must lie in (0, 1], a local gradient (got {args.dead_threshold})")
    if args.diagnostics_interval > 0 and args.diagnostics_samples < args.hidden_dim:
        raise ValueError(
            f"--diagnostics-samples ({args.diagnostics_samples}) must be at least --hidden-dim ({args.hidden_dim}) "
            "to measure the rank of the representation"
        )
    if args.checkpoint_interval > 0 and not args.save_model:
        raise ValueError("--checkpoint-interval needs --save-model (a checkpoint holds the model)")
    if args.eval_only and args.resume is None:
        raise ValueError("--eval-only needs --resume RUN_DIR, the run whose model it evaluates")
    if args.eval_only and args.eval_episodes == 0:
        raise ValueError("--eval-only needs --eval-episodes of at least 1")


def check_args(args: Args) -> None:
    """Stop with a one-line reason before any work starts."""
    check_common_args(args)
    if args.num_envs != 1:
        raise ValueError(f"--num-envs must be 1: this DQN plays one game at a time (got {args.num_envs})")
    require_positive(args, "batch_size", "train_frequency", "target_network_frequency")
    require_fraction(args, "start_e", "end_e", "exploration_fraction")
    if args.learning_starts < 1:
        raise ValueError("--learning-starts must be at least 1: learning samples transitions already stored")
    if not 0.0 < args.tau <= 1.0:
        raise ValueError(f"--tau must lie in (0, 1] (got {args.tau})")
    if args.buffer_size < max(args.batch_size, 5):
        raise ValueError(
            f"--buffer-size ({args.buffer_size}) must be at least --batch-size ({args.batch_size}) and at least 5"
        )
    memory_needed = args.buffer_size * (84 * 84 + 8)  # a frame and 8 bytes of bookkeeping per slot
    memory_here = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if memory_needed > memory_here:
        raise ValueError(
            f"--buffer-size ({args.buffer_size:,}) needs {memory_needed / 2**30:.1f} GiB for the replay memory, "
            f"more than this machine's {memory_here / 2**30:.1f} GiB"
        )
    if args.diagnostics_interval > 0 and args.diagnostics_samples > args.buffer_size:
        raise ValueError(
            f"--diagnostics-samples ({args.diagnostics_samples}) must be at most --buffer-size ({args.buffer_size}): "
            "the probe states are sampled from the replay memory"
        )


RESUME_OPTIONS = ("resume", "eval_only", "cuda", "eval_episodes")  # the only arguments --resume takes beside it


def resumed_args(given: Args) -> Args:
    """The arguments of the run that --resume names (its args.json), once it is clear that it can be continued."""
    run_dir = given.resume
    try:
        with open(os.path.join(run_dir, "args.json")) as f:
            saved = json.load(f)
        with open(os.path.join(run_dir, "status.json")) as f:
            status = json.load(f)
    except (OSError, ValueError):
        raise ValueError(f"--resume {run_dir}: not a run folder (no readable args.json and status.json)") from None
    script = os.path.basename(__file__)
    if status.get("script") != script:
        raise ValueError(f"--resume {run_dir}: a run of {status.get('script')}, not of {script}")
    defaults = Args()
    for name in (field.name for field in dataclasses.fields(Args)):
        if name not in RESUME_OPTIONS and getattr(given, name) != getattr(defaults, name):
            raise ValueError(
                f"--resume continues a run with its own arguments: {flag(name)} cannot change "
                "(only --cuda/--no-cuda and --eval-episodes can)"
            )
    args = Args(**{field.name: saved[field.name] for field in dataclasses.fields(Args) if field.name in saved})
    args.resume, args.eval_only = run_dir, given.eval_only
    for name in ("cuda", "eval_episodes"):  # given beside --resume, they replace the run's own
        if getattr(given, name) != getattr(defaults, name):
            setattr(args, name, getattr(given, name))
    if status.get("status") == "running" and status.get("host") == socket.gethostname():
        try:
            os.kill(status["pid"], 0)  # signal 0 only asks whether the process is there
            alive = True
        except ProcessLookupError:
            alive = False  # it was killed without a word: continue from its latest checkpoint
        except PermissionError:
            alive = True
        if alive:
            raise ValueError(f"--resume {run_dir}: the run is still running (process {status['pid']})")
    if args.eval_only:
        if not os.path.exists(os.path.join(run_dir, f"{args.exp_name}.pt")):
            raise ValueError(f"--resume {run_dir} --eval-only: the run saved no model (it ran without --save-model)")
    elif status.get("status") == "finished":
        raise ValueError(f"--resume {run_dir}: the run finished already (--eval-only evaluates its model again)")
    elif not os.path.exists(os.path.join(run_dir, "checkpoint.pt")):
        raise ValueError(f"--resume {run_dir}: no checkpoint to continue from (checkpoints need --save-model)")
    return args


def parse_args(argv: list[str] | None = None) -> Args:
    """The command line, checked before any work starts: a bad argument stops the script with one line."""
    args = tyro.cli(Args, args=argv)
    try:
        if args.resume is not None:
            args = resumed_args(args)
        check_args(args)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_ARGUMENTS)
    return args


if __name__ == "__main__":
    args = parse_args()
    if args.learning_starts >= args.total_timesteps:
        print(
            f"note: --learning-starts ({args.learning_starts:,}) >= --total-timesteps ({args.total_timesteps:,}): "
            "this run only collects experience, the network is not trained"
        )
    run_dir = args.resume or os.path.join("runs", f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}")
    run_name = os.path.basename(os.path.normpath(run_dir))
    if args.resume is None and os.path.exists(run_dir):
        print(f"error: {run_dir} exists already; a run never overwrites another", file=sys.stderr)
        sys.exit(EXIT_BAD_ARGUMENTS)
    if args.track:
        try:
            import wandb
        except ImportError:
            print("error: --track needs wandb (pip install wandb)", file=sys.stderr)
            sys.exit(EXIT_BAD_ARGUMENTS)
        wandb.init(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            sync_tensorboard=True,
            config=vars(args),
            name=run_name,
            save_code=True,
        )
    model_path = os.path.join(run_dir, f"{args.exp_name}.pt")
    checkpoint_path = os.path.join(run_dir, "checkpoint.pt")
    checkpoint = None
    if args.resume is not None and not args.eval_only:
        checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=True)
    # a resumed run's TensorBoard hides what the stopped one logged after its checkpoint
    writer = SummaryWriter(run_dir, purge_step=checkpoint["global_step"] + 1 if checkpoint else None)
    if args.resume is None:
        writer.add_text(
            "hyperparameters",
            "|param|value|\n|-|-|\n" + "\n".join(f"|{key}|{value}|" for key, value in vars(args).items()),
        )
        with open(os.path.join(run_dir, "args.json"), "w") as f:
            json.dump(vars(args), f, indent=2)
    if not args.eval_only:
        write_status(
            run_dir,
            script=os.path.basename(__file__),
            status="running",
            message=None,
            host=socket.gethostname(),
            pid=os.getpid(),
        )

    # TRY NOT TO MODIFY: seeding
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic

    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    # env setup
    envs = make_env(args.env_id, args.num_envs, args.max_episode_frames, args.repeat_action_probability)
    num_actions = envs.single_action_space.n
    fire_action = find_fire_action(envs) if args.fire_on_life_loss else None  # pressed after every lost life

    q_network = QNetwork(num_actions, args.activation, args.hadamard, args.hidden_dim).to(device)
    # foreach: the multi-tensor update, which PyTorch picks by itself on GPUs only; it is faster on CPUs too
    optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, foreach=True)
    target_network = QNetwork(num_actions, args.activation, args.hadamard, args.hidden_dim).to(device)
    target_network.load_state_dict(q_network.state_dict())
    rb = ReplayBuffer(args.buffer_size, seed=args.seed)
    probe_generator = np.random.default_rng(args.seed + 1)  # diagnostics' own, not training's
    num_parameters = sum(parameter.numel() for parameter in q_network.parameters())
    print(f"device {device} | {type(q_network).__name__} of {num_parameters:,} parameters | run folder {run_dir}")
    stop = StopRequest()

    if args.eval_only:  # --resume RUN_DIR --eval-only: the saved model's evaluation, nothing else
        q_network.load_state_dict(torch.load(model_path, map_location=device, weights_only=True))
        scores = evaluate(q_network, args, device, writer, stop)
        write_status(run_dir, evaluation={"returns": scores, "of": args.eval_episodes})
        writer.close()
        print(
            f"evaluation: mean return {np.mean(scores or np.nan):.1f} over {len(scores)} of {args.eval_episodes} games"
        )
        print(f"run folder: {run_dir}")
        sys.exit(0 if len(scores) == args.eval_episodes else EXIT_INTERRUPTED)

    # TRY NOT TO MODIFY: start the game, or continue the run from its checkpoint with fresh games (see README)
    global_step = 0
    next_diagnostics_step = args.diagnostics_interval
    next_checkpoint_step = args.checkpoint_interval
    recent_returns = deque(maxlen=20)
    elapsed_time = 0.0
    reset_seed = args.seed
    if checkpoint is not None:
        global_step = checkpoint["global_step"]
        next_diagnostics_step = checkpoint["next_diagnostics_step"]
        next_checkpoint_step = checkpoint["next_checkpoint_step"]
        recent_returns.extend(checkpoint["recent_returns"])
        elapsed_time = checkpoint["elapsed_time"]
        q_network.load_state_dict(checkpoint["q_network"])
        target_network.load_state_dict(checkpoint["target_network"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        restore_vars(rb, checkpoint["replay_memory"])
        rb.starting_game = True  # the game in progress is abandoned: the next transition starts a fresh one
        probe_generator.bit_generator.state = checkpoint["probe_generator"]
        restore_rng_states(checkpoint["rng"])
        reset_seed = resume_seed(args.seed, global_step, args.num_envs)
        print(f"resumed at step {global_step:,} from {checkpoint_path}")
        del checkpoint
    obs, info = envs.reset(seed=reset_seed)
    tracker = EpisodeTracker(args.num_envs, info["lives"], fire_action)
    start_time = last_print = time.time() - elapsed_time
    epsilon_duration = args.exploration_fraction * args.total_timesteps

    def training_state() -> dict:
        """All that --resume restores; the env's games cannot be saved (see README: Long runs)."""
        return {
            "global_step": global_step,
            "next_diagnostics_step": next_diagnostics_step,
            "next_checkpoint_step": next_checkpoint_step,
            "recent_returns": list(recent_returns),
            "elapsed_time": time.time() - start_time,
            "episode_tracker": saveable_vars(tracker),
            "q_network": q_network.state_dict(),
            "target_network": target_network.state_dict(),
            "optimizer": optimizer.state_dict(),
            "replay_memory": saveable_vars(rb),
            "probe_generator": probe_generator.bit_generator.state,
            "rng": rng_states(),
        }

    crash = None
    try:
        while global_step < args.total_timesteps:
            # TRY NOT TO MODIFY: between two steps the run is whole: checkpoint it now and then, stop here when asked
            if args.checkpoint_interval > 0 and global_step >= next_checkpoint_step:
                next_checkpoint_step += args.checkpoint_interval
                atomic_save(q_network.state_dict(), model_path)
                atomic_save(training_state(), checkpoint_path)
                write_status(run_dir, checkpoint_step=global_step)
            if stop:
                break
            global_step += 1  # every env step, the reset and forced FIRE steps included

            # ALGO LOGIC: epsilon-greedy action
            epsilon = linear_schedule(args.start_e, args.end_e, epsilon_duration, global_step)
            if random.random() < epsilon:
                actions = np.array([random.randrange(num_actions)])
            else:
                with torch.no_grad():
                    q_values = q_network(torch.from_numpy(obs).to(device))
                actions = q_values.argmax(1).cpu().numpy()
            # the env plays the step in its own thread while the Q-network learns below; recv, after the training,
            # waits for the result. Two steps are not the agent's: a forced FIRE after a lost life plays FIRE
            # instead, and the reset step after a game ends (NEXT_STEP autoreset) ignores the action
            envs.send(tracker.with_forced_fire(actions))

            # ALGO LOGIC: training (from the transitions stored so far)
            if global_step > args.learning_starts and global_step % args.train_frequency == 0:
                data = rb.sample(args.batch_size, device)
                with torch.no_grad():
                    td_target = td_targets(data.rewards, target_network(data.next_obs), data.terminals, args.gamma)
                loss, old_val = td_loss(q_network(data.obs), data.actions, td_target)

                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

                if global_step % 100 == 0:
                    writer.add_scalar("losses/td_loss", loss, global_step)
                    writer.add_scalar("losses/q_values", old_val.mean(), global_step)

            # update the target network: target <- tau * online + (1 - tau) * target, a hard copy with tau = 1
            if global_step > args.learning_starts and global_step % args.target_network_frequency == 0:
                with torch.no_grad():
                    for target_param, param in zip(target_network.parameters(), q_network.parameters()):
                        target_param.lerp_(param, args.tau)

            # TRY NOT TO MODIFY: the step's results; log the games that ended
            resetting = tracker.resetting[0]
            next_obs, rewards, terminations, truncations, info = envs.recv()
            is_transition, life_lost, finished = tracker.step(rewards, terminations, truncations, info["lives"])
            for _, score, length in finished:
                recent_returns.append(score)
                writer.add_scalar("charts/episodic_return", score, global_step)
                writer.add_scalar("charts/episodic_length", length, global_step)

            # ALGO LOGIC: store the transition. A lost life is terminal for the TD target while the game goes on
            # (next_obs continues the same frame stack); a time-limit truncation is not terminal (next_obs is the
            # true final obs); either end of the game makes the next stored obs a new game's reset obs. A forced
            # FIRE's frame is stored (the stacks after it need it) as no transition; a reset step stores nothing.
            if not resetting:
                terminal, game_over = terminations[0] or life_lost[0], terminations[0] or truncations[0]
                rb.add(obs[0], next_obs[0], actions[0], rewards[0], terminal, game_over, is_transition[0])
            obs = next_obs

            # diagnostics on states sampled from the replay memory (skipped while it holds too few)
            diagnostics_due = args.diagnostics_interval > 0 and global_step >= next_diagnostics_step
            if diagnostics_due and len(rb) < args.diagnostics_samples:
                next_diagnostics_step += args.diagnostics_interval
                print(
                    f"diagnostics skipped at step {global_step}: the replay memory holds {len(rb)} states, "
                    f"fewer than --diagnostics-samples ({args.diagnostics_samples})"
                )
            elif diagnostics_due:
                next_diagnostics_step += args.diagnostics_interval
                probe_obs = rb.sample_states(args.diagnostics_samples, probe_generator, device)
                activations = diagnostics.capture_activations(q_network, probe_obs)
                diagnostics.log_diagnostics(
                    writer,
                    global_step,
                    activations,
                    hidden_activation=args.activation,
                    dead_threshold=args.dead_threshold,
                    dormant_tau=args.dormant_tau,
                    save_dir=os.path.join(run_dir, "activations") if args.save_activations else None,
                )

            if global_step % 100 == 0:
                writer.add_scalar("charts/epsilon", epsilon, global_step)
                writer.add_scalar("charts/SPS", int(global_step / (time.time() - start_time)), global_step)
            if time.time() - last_print > 5:
                last_print = time.time()
                print(status_line(global_step, args.total_timesteps, start_time, recent_returns), flush=True)
    except KeyboardInterrupt:  # a second signal: stopped at once, in the middle of a step
        pass
    except Exception as error:  # saved and logged below, then reported in one line
        crash = error
        crash_traceback = traceback.format_exc()
    envs.close()

    # TRY NOT TO MODIFY: keep what the run reached, evaluate it when its training is over, record how it ended
    if args.save_model:
        try:
            atomic_save(q_network.state_dict(), model_path)
            print(f"model saved to {model_path}")
            if crash is None and not stop.at_once:
                atomic_save(training_state(), checkpoint_path)
                write_status(run_dir, checkpoint_step=global_step)
        except KeyboardInterrupt:  # a second signal while saving: the previous files stay as they were
            pass
        except OSError as error:  # a full disk, say: the previous files stay as they were
            if crash is None:
                crash, crash_traceback = error, traceback.format_exc()
    whole = crash is None and not stop.at_once  # stopped between two steps: its checkpoint continues it exactly
    training_over = whole and global_step >= args.total_timesteps
    if crash is not None:
        message = f"crashed at step {global_step:,}: {type(crash).__name__}: {crash}"
        end_run(run_dir, writer, global_step, "crashed", message, error=crash_traceback)
    if not training_over:
        how = f"by {stop.signal_name}" + (" (twice: at once)" if stop.at_once else "")
        resume = f"python {os.path.basename(__file__)} --resume {run_dir}" if args.save_model and whole else None
        message = f"interrupted {how} at step {global_step:,}: " + (
            f"continue with {resume}" if resume else "keeping what was logged"
        )
        end_run(run_dir, writer, global_step, "interrupted", message, signal_name=stop.signal_name)
    if args.save_model and args.eval_episodes > 0:
        # evaluation: a fresh network loads the saved model and plays full games
        eval_network = QNetwork(num_actions, args.activation, args.hadamard, args.hidden_dim).to(device)
        eval_network.load_state_dict(torch.load(model_path, map_location=device, weights_only=True))
        scores = evaluate(eval_network, args, device, writer, stop)
        write_status(run_dir, evaluation={"returns": scores, "of": args.eval_episodes})
        print(
            f"evaluation: mean return {np.mean(scores or np.nan):.1f} over {len(scores)} of {args.eval_episodes} games"
        )
        if len(scores) < args.eval_episodes:
            message = f"evaluation interrupted by {stop.signal_name} after {len(scores)} games: --resume {run_dir} plays it again"
            end_run(run_dir, writer, global_step, "interrupted", message, signal_name=stop.signal_name)
    if os.path.exists(checkpoint_path):
        os.remove(checkpoint_path)  # a finished run is not resumed: its model stays (DQN: 7 GB of replay memory go)
        write_status(run_dir, checkpoint_step=None)
    end_run(run_dir, writer, global_step, "finished", f"finished at step {global_step:,}")
