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
"""

import difflib
import json
import os
import random
import re
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
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
    """whether to save the model to the run folder (at the end, or on Ctrl-C) and evaluate it"""
    eval_episodes: int = 10
    """full games played by the evaluation after training (with --save-model), epsilon-greedy with epsilon 0.01"""

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
    """a unit is gradient-dead when its local gradient is below this on every probe state"""
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


def linear_schedule(start_e: float, end_e: float, duration: float, t: int) -> float:
    """Epsilon at step t: from start_e down to end_e over `duration` steps, then constant."""
    if duration <= 0:
        return end_e
    return start_e + (end_e - start_e) * min(t / duration, 1.0)


class Transitions(NamedTuple):
    obs: np.ndarray  # (batch, 4, 84, 84) uint8: the frame stacks the agent acted on
    actions: np.ndarray  # (batch,) int64
    rewards: np.ndarray  # (batch,) float32, clipped to their sign
    next_obs: np.ndarray  # (batch, 4, 84, 84) uint8: the frame stacks the env returned
    terminals: np.ndarray  # (batch,) float32: 1 when the game ended or a life was lost (no bootstrap)


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

    def get(self, slots: np.ndarray) -> Transitions:
        """The transitions stored at these slots, stacks rebuilt (vectorised: one gather for the whole batch)."""
        offsets = np.arange(-self.stack + 1, 2)  # frames i-3 .. i+1: obs is the first 4, next_obs the last 4
        frames = self.frames[(slots[:, None] + offsets) % self.capacity]  # (batch, 5, 84, 84), a copy
        frames[offsets < -self.since_start[slots, None].astype(np.int64)] = 0  # before the game's start: zeros
        return Transitions(
            obs=frames[:, :-1],
            actions=self.actions[slots].astype(np.int64),
            rewards=self.rewards[slots],
            next_obs=frames[:, 1:],
            terminals=self.terminals[slots].astype(np.float32),
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

    def sample(self, batch_size: int) -> Transitions:
        return self.get(self.sample_slots(batch_size))

    def sample_states(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n distinct stored obs (frame stacks), drawn with the given generator (diagnostics' probe states)."""
        slots = rng.choice(np.flatnonzero(self.valid), size=n, replace=False)
        return self.get(np.sort(slots)).obs


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


def evaluate(
    q_network: nn.Module, envs, episodes: int, epsilon: float, device: torch.device, seed: int, fire_action=None
) -> list:
    """Plays `episodes` full games epsilon-greedily with one env (FIRE after a lost life, given fire_action)."""
    rng = np.random.default_rng(seed)
    num_actions = envs.single_action_space.n
    obs, info = envs.reset(seed=seed)
    tracker = EpisodeTracker(1, info["lives"], fire_action)
    scores = []
    while len(scores) < episodes:
        if rng.random() < epsilon:
            actions = rng.integers(0, num_actions, 1)
        else:
            with torch.no_grad():
                actions = q_network(torch.from_numpy(obs).to(device)).argmax(1).cpu().numpy()
        obs, rewards, terminations, truncations, info = envs.step(tracker.with_forced_fire(actions))
        _, _, finished = tracker.step(rewards, terminations, truncations, info["lives"])
        scores += [score for _, score, _ in finished]
    return scores


def check_args(args: Args) -> None:
    """Stop with a one-line reason before any work starts."""
    atari_game(args.env_id)
    if args.total_timesteps <= 0:
        raise ValueError("--total-timesteps must be positive")
    if args.hidden_dim <= 0:
        raise ValueError("--hidden-dim must be positive")
    if args.diagnostics_interval < 0:
        raise ValueError("--diagnostics-interval must be >= 0 (0 turns diagnostics off)")
    if args.diagnostics_interval > 0 and args.diagnostics_samples < args.hidden_dim:
        raise ValueError(
            f"--diagnostics-samples ({args.diagnostics_samples}) must be at least --hidden-dim ({args.hidden_dim}) "
            "to measure the rank of the representation"
        )
    if args.max_episode_frames <= 0:
        raise ValueError("--max-episode-frames must be positive")
    if args.eval_episodes < 0:
        raise ValueError("--eval-episodes must be >= 0")
    if args.num_envs != 1:
        raise ValueError(f"--num-envs must be 1: this DQN plays one game at a time (got {args.num_envs})")
    if args.batch_size <= 0:
        raise ValueError("--batch-size must be positive")
    if args.buffer_size < max(args.batch_size, 5):
        raise ValueError(
            f"--buffer-size ({args.buffer_size}) must be at least --batch-size ({args.batch_size}) and at least 5"
        )
    if args.diagnostics_interval > 0 and args.diagnostics_samples > args.buffer_size:
        raise ValueError(
            f"--diagnostics-samples ({args.diagnostics_samples}) must fit in --buffer-size ({args.buffer_size}): "
            "the probe states are sampled from the replay memory"
        )
    if args.learning_starts < 1:
        raise ValueError("--learning-starts must be at least 1: learning samples transitions already stored")
    if args.train_frequency <= 0 or args.target_network_frequency <= 0:
        raise ValueError("--train-frequency and --target-network-frequency must be positive")
    if not 0.0 < args.tau <= 1.0:
        raise ValueError(f"--tau must be in (0, 1] (got {args.tau})")


if __name__ == "__main__":
    args = tyro.cli(Args)
    try:
        check_args(args)
    except ValueError as error:
        sys.exit(f"error: {error}")
    if args.learning_starts >= args.total_timesteps:
        print(
            f"note: --learning-starts ({args.learning_starts:,}) >= --total-timesteps ({args.total_timesteps:,}): "
            "this run only collects experience, the network is not trained"
        )
    run_name = f"{args.env_id}__{args.exp_name}__{args.seed}__{int(time.time())}"
    run_dir = os.path.join("runs", run_name)
    if os.path.exists(run_dir):
        sys.exit(f"error: {run_dir} exists already; a run never overwrites another")
    if args.track:
        try:
            import wandb
        except ImportError:
            sys.exit("error: --track needs wandb (pip install wandb)")
        wandb.init(
            project=args.wandb_project_name,
            entity=args.wandb_entity,
            sync_tensorboard=True,
            config=vars(args),
            name=run_name,
            save_code=True,
        )
    writer = SummaryWriter(run_dir)
    writer.add_text(
        "hyperparameters",
        "|param|value|\n|-|-|\n" + "\n".join(f"|{key}|{value}|" for key, value in vars(args).items()),
    )
    with open(os.path.join(run_dir, "args.json"), "w") as f:
        json.dump(vars(args), f, indent=2)

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

    # ALGO LOGIC: the Q-network, its target network, the optimizer and the replay memory
    q_network = QNetwork(num_actions, args.activation, args.hadamard, args.hidden_dim).to(device)
    optimizer = optim.Adam(q_network.parameters(), lr=args.learning_rate)
    target_network = QNetwork(num_actions, args.activation, args.hadamard, args.hidden_dim).to(device)
    target_network.load_state_dict(q_network.state_dict())
    rb = ReplayBuffer(args.buffer_size, seed=args.seed)
    probe_rng = np.random.default_rng(args.seed + 1)  # diagnostics draw their own samples: training is unchanged

    # TRY NOT TO MODIFY: start the game
    obs, info = envs.reset(seed=args.seed)
    tracker = EpisodeTracker(args.num_envs, info["lives"], fire_action)
    recent_returns = deque(maxlen=20)
    start_time = last_print = time.time()
    next_diagnostics_step = args.diagnostics_interval
    global_step = 0
    try:
        while global_step < args.total_timesteps:
            global_step += 1  # every env step, the reset and forced FIRE steps included

            # ALGO LOGIC: epsilon-greedy action
            epsilon = linear_schedule(
                args.start_e, args.end_e, args.exploration_fraction * args.total_timesteps, global_step
            )
            if random.random() < epsilon:
                actions = np.array([random.randrange(num_actions)])
            else:
                with torch.no_grad():
                    q_values = q_network(torch.from_numpy(obs).to(device))
                actions = q_values.argmax(1).cpu().numpy()
            # the env steps in its own C++ thread while the Q-network learns below. Two steps are not the agent's: a
            # forced FIRE after a lost life plays FIRE instead, and the reset step after a game ends (NEXT_STEP
            # autoreset) ignores the action
            envs.send(tracker.with_forced_fire(actions))

            # ALGO LOGIC: training (from the transitions stored so far)
            if global_step > args.learning_starts and global_step % args.train_frequency == 0:
                data = rb.sample(args.batch_size)
                batch_obs = torch.from_numpy(data.obs).to(device)
                batch_next_obs = torch.from_numpy(data.next_obs).to(device)
                batch_actions = torch.from_numpy(data.actions).to(device)
                batch_rewards = torch.from_numpy(data.rewards).to(device)
                batch_terminals = torch.from_numpy(data.terminals).to(device)
                with torch.no_grad():
                    td_target = td_targets(batch_rewards, target_network(batch_next_obs), batch_terminals, args.gamma)
                loss, old_val = td_loss(q_network(batch_obs), batch_actions, td_target)

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
                rb.add(
                    obs[0],
                    next_obs[0],
                    actions[0],
                    rewards[0],
                    terminal=terminations[0] or life_lost[0],
                    game_over=terminations[0] or truncations[0],
                    is_transition=is_transition[0],
                )
            obs = next_obs

            # diagnostics on states sampled from the replay memory (skipped while it holds too few)
            if args.diagnostics_interval > 0 and global_step >= next_diagnostics_step:
                next_diagnostics_step += args.diagnostics_interval
                if len(rb) < args.diagnostics_samples:
                    print(
                        f"diagnostics skipped at step {global_step}: the replay memory holds {len(rb)} states, "
                        f"fewer than --diagnostics-samples ({args.diagnostics_samples})"
                    )
                else:
                    probe_obs = torch.from_numpy(rb.sample_states(args.diagnostics_samples, probe_rng)).to(device)
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
                writer.add_scalar("charts/SPS", int(global_step / (time.time() - start_time)), global_step)
                writer.add_scalar("charts/epsilon", epsilon, global_step)
                if time.time() - last_print > 5:
                    last_print = time.time()
                    print(status_line(global_step, args.total_timesteps, start_time, recent_returns), flush=True)
    except KeyboardInterrupt:
        print(f"interrupted at step {global_step}: keeping what was logged")
        args.eval_episodes = 0

    if args.save_model:
        model_path = os.path.join(run_dir, f"{args.exp_name}.pt")
        torch.save(q_network.state_dict(), model_path)
        print(f"model saved to {model_path}")
        # evaluation: a fresh network loads the checkpoint and plays full games, epsilon-greedy with epsilon 0.01
        if args.eval_episodes > 0:
            eval_network = QNetwork(num_actions, args.activation, args.hadamard, args.hidden_dim).to(device)
            eval_network.load_state_dict(torch.load(model_path, map_location=device, weights_only=True))
            eval_envs = make_env(args.env_id, 1, args.max_episode_frames, args.repeat_action_probability)
            scores = evaluate(eval_network, eval_envs, args.eval_episodes, 0.01, device, args.seed + 1, fire_action)
            for episode, score in enumerate(scores):
                writer.add_scalar("eval/episodic_return", score, episode)
            print(f"evaluation: mean return {np.mean(scores):.1f} over {len(scores)} games (epsilon 0.01)")
            eval_envs.close()

    envs.close()
    writer.close()
