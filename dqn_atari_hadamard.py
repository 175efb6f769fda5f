"""DQN on Atari with the Hadamard representation (Kooi, Hoogendoorn, Francois-Lavet 2024, arXiv 2406.09079).

Deep Q-learning (Mnih et al. 2015: replay memory, target network, epsilon-greedy) on one game, with a Q-network
whose final hidden layer is the element-wise product of two tanh layers, h = tanh(W1 z + b1) * tanh(W2 z + b2),
on top of the Nature-CNN convolutions; --no-hadamard gives the plain layer h = tanh(W z + b).

Run:
    python dqn_atari_hadamard.py --env-id Breakout-v5
    python dqn_atari_hadamard.py --env-id Breakout-v5 --no-hadamard --hidden-dim 1024   # parameter-matched baseline
    python dqn_atari_hadamard.py --env-id Breakout-v5 --activation relu --no-hadamard   # the classic Nature-CNN
Watch:  tensorboard --logdir runs      Diagnostics offline:  python diagnostics.py runs/<run>
Stop:   Ctrl-C saves a checkpoint and exits 75; continue with --resume runs/<run> (docs/long-runs.md)
"""

import os
import random
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import diagnostics
import run_management


@dataclass
class Args:
    # Algorithm specific arguments
    env_id: str = "Breakout-v5"  # the Atari game, e.g. Breakout-v5, Pong-v5 (ale-py ROM ids work too)
    total_timesteps: int = 10_000_000  # total env steps of the experiment (one step = 4 frames)
    max_episode_frames: int = 108_000  # the time limit of a game in frames (108,000: 30 minutes of play)
    fire_on_life_loss: bool = True  # press FIRE for the agent after a lost life, as the references do
    repeat_action_probability: float = 0.0  # sticky actions (0 as in the references; 0.25: Machado et al. 2018)
    learning_rate: float = 1e-4  # the learning rate of the optimizer (Adam)
    num_envs: int = 1  # the number of parallel game environments (this DQN plays one game at a time)
    buffer_size: int = 1_000_000  # the replay memory's size in frames (as many transitions, less one per game)
    gamma: float = 0.99  # the discount factor gamma
    tau: float = 1.0  # the target network update rate (1.0 copies the Q-network)
    target_network_frequency: int = 1000  # env steps between updates of the target network
    batch_size: int = 32  # the batch size of transitions sampled from the replay memory
    start_e: float = 1.0  # the starting epsilon for exploration
    end_e: float = 0.01  # the ending epsilon for exploration
    exploration_fraction: float = 0.10  # the fraction of `total_timesteps` it takes from start_e to go to end_e
    learning_starts: int = 80_000  # env steps played before learning starts
    train_frequency: int = 4  # env steps between gradient steps

    # Representation (the paper's method by default)
    activation: Literal["tanh", "relu", "sigmoid", "gelu", "silu"] = "tanh"  # of the final hidden layer (convs: ReLU)
    hadamard: bool = True  # the final hidden layer is the Hadamard product of two layers; --no-hadamard: one layer
    hidden_dim: int = 512  # units of the final hidden layer (1024 with --no-hadamard: as many parameters)

    # Diagnostics (dead neurons and effective rank, docs/diagnostics.md)
    diagnostics_interval: int | None = None  # env steps between captures (default: a tenth of the run; 0: none)
    diagnostics_samples: int = 1024  # probe states per capture (at least hidden_dim, so that the rank is measurable)
    save_activations: bool = False  # save each capture's activations to <run>/activations/step_<step>.npz
    dead_threshold: float = 0.02  # a unit is dead when its activation's slope is below this on every probe state
    dormant_tau: float = 0.025  # a unit is tau-dormant when its normalised mean |activation| is at most this (ReDo)

    # Run management (docs/long-runs.md)
    exp_name: str = os.path.basename(__file__)[: -len(".py")]  # the name of this experiment (in the run folder's)
    seed: int = 1  # seed of the experiment
    torch_deterministic: bool = True  # if toggled, `torch.backends.cudnn.deterministic=True`
    cuda: bool = True  # if toggled, cuda is used when available
    track: bool = False  # track the run with Weights and Biases (needs `pip install wandb`)
    wandb_project_name: str = "hadamard-rl"  # the wandb project name
    wandb_entity: str | None = None  # the entity (team) of the wandb project
    save_model: bool = True  # save the model and a checkpoint to the run folder (at the end, or when stopped)
    eval_episodes: int = 10  # games the saved model plays after training, epsilon-greedy with epsilon end_e
    capture_video: bool = False  # record the evaluation games as colour videos in <run>/videos/ (pip install av)
    checkpoint_interval: int = 0  # env steps between checkpoints (with --save-model); 0: only when the run stops
    resume: str | None = None  # a run folder to continue from its checkpoint, with the run's own arguments
    eval_only: bool = False  # with --resume: only play the evaluation games of the run's saved model


def make_env(env_id: str, num_envs: int, max_episode_frames=108_000, repeat_action_probability=0.0, colour=False):
    """ale-py's C++ vector env with the references' Atari preprocessing (docs/protocol.md): raw rewards (learning clips
    them to their sign), a lost life no episode end (EpisodeTracker sees it in info["lives"]), NEXT_STEP autoreset (the
    step after a game ends only resets that env), one frame per env and step, (num_envs, 1, 84, 84), which stack_frames
    stacks; with colour, the screen as the emulator shows it, (num_envs, 1, 210, 160, 3), for videos."""
    from ale_py.vector_env import AtariVectorEnv

    return AtariVectorEnv(
        game=run_management.atari_game(env_id),
        num_envs=num_envs,
        frameskip=4,
        maxpool=True,
        img_height=210 if colour else 84,
        img_width=160 if colour else 84,
        grayscale=not colour,
        stack_num=1,
        noop_max=30,
        use_fire_reset=True,
        repeat_action_probability=repeat_action_probability,
        max_num_frames_per_episode=max_episode_frames,
        reward_clipping=False,
        episodic_life=False,
        life_loss_info=False,
    )


def find_fire_action(envs) -> int | None:
    """The index of FIRE in the env's action set, or None when the game has no FIRE."""
    from ale_py import Action

    action_set = list(envs.ale.get_action_set())
    return action_set.index(Action.FIRE) if Action.FIRE in action_set else None


class EpisodeTracker:
    """Per env: the game's score over all its lives, lost lives, and the steps that are not the agent's (the reset
    step after a game ends; given fire_action, the forced FIRE after a lost life). Those count in global_step, but
    is_transition is False on them: nothing learns from them (docs/protocol.md)."""

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


def stack_frames(stacks: np.ndarray, frames: np.ndarray, fresh: np.ndarray) -> np.ndarray:
    """Pushes each env's new frame (num_envs, 1, 84, 84) onto its stack (num_envs, 4, 84, 84), oldest first, into a
    new array; where fresh (a new game or life begins) the stack restarts as four copies of the new frame."""
    stacks = np.concatenate((stacks[:, 1:], frames), axis=1)
    stacks[fresh] = frames[fresh]
    return stacks


ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu, "sigmoid": torch.sigmoid, "gelu": F.gelu, "silu": F.silu}


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


def make_network(args: Args, num_actions: int) -> QNetwork:  # training, evaluation and --resume all build it here
    return QNetwork(num_actions, args.activation, args.hadamard, args.hidden_dim)


def linear_schedule(start_e: float, end_e: float, duration: float, t: int) -> float:
    """Epsilon at step t: from start_e down to end_e over `duration` steps, then constant."""
    if duration <= 0:
        return end_e
    return start_e + (end_e - start_e) * min(t / duration, 1.0)


class Transitions(NamedTuple):
    obs: torch.Tensor  # (batch, 4, 84, 84) uint8: the frame stacks the agent acted on
    actions: torch.Tensor  # (batch,) int64
    rewards: torch.Tensor  # (batch,) float32, clipped to their sign
    next_obs: torch.Tensor  # (batch, 4, 84, 84) uint8: the frame stacks after the step
    terminals: torch.Tensor  # (batch,) float32: 1 when the game ended or a life was lost (no bootstrap)


class ReplayBuffer:
    """Replay memory that keeps each 84x84 frame once (about 7 KB per transition) and rebuilds the stacks it samples.

    A circular array of slots, one frame each; a game fills consecutive slots, from the frame of its reset obs on.
    The transition at slot i acted on the stack of frames i-3 .. i and led to frames i-2 .. i+1, where a stack that
    starts at frame s (a game's reset obs, or the frame after a forced FIRE) repeats frame s in place of those before
    it, as stack_frames does. A game's final frame starts no transition, and a transition is dropped as soon as a
    frame of its stacks is overwritten.
    """

    def __init__(self, capacity: int, seed: int = 0, stack: int = 4, frame_shape: tuple = (84, 84)):
        if capacity < stack + 1:
            raise ValueError(f"the replay buffer needs at least {stack + 1} slots (one stack and its next frame)")
        self.capacity = capacity
        self.stack = stack
        self.frames = np.zeros((capacity, *frame_shape), dtype=np.uint8)
        self.since_start = np.zeros(capacity, dtype=np.uint8)  # frames since its stack's start, at most stack-1
        self.actions = np.zeros(capacity, dtype=np.uint8)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminals = np.zeros(capacity, dtype=bool)
        self.is_transition = np.zeros(capacity, dtype=bool)  # a transition starts here and its frames are all here
        self.num_transitions = 0
        self.size = 0  # slots written so far (up to capacity)
        self.newest = -1  # slot of the newest frame: the obs of the next transition ends with it
        self.starting_game = True  # the next transition is the first of a game: its obs is a reset obs
        self.rng = np.random.default_rng(seed)

    ARRAYS = ("frames", "since_start", "actions", "rewards", "terminals", "is_transition")  # what a checkpoint keeps

    def state_dict(self) -> dict:
        """What a checkpoint keeps: the slots filled so far (sharing the arrays' memory), counters, sampling state."""
        state = {name: torch.from_numpy(getattr(self, name)[: self.size]) for name in self.ARRAYS}
        state.update(num_transitions=self.num_transitions, size=self.size, newest=self.newest)
        return state | {"starting_game": self.starting_game, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        for name in self.ARRAYS:
            np.copyto(getattr(self, name)[: state["size"]], state[name].numpy())  # into the memory allocated already
        self.num_transitions, self.size, self.newest = state["num_transitions"], state["size"], state["newest"]
        self.rng.bit_generator.state = state["rng"]
        self.starting_game = True  # the game in progress was not saved: the next transition starts a fresh one

    def __len__(self) -> int:
        return self.num_transitions

    def _write_frame(self, frame: np.ndarray, since_start: int) -> None:
        slot = (self.newest + 1) % self.capacity
        # the transition stored here and those whose stacks reach back to this slot lose a frame: drop them
        dropped = (slot + np.arange(self.stack)) % self.capacity
        self.num_transitions -= int(self.is_transition[dropped].sum())
        self.is_transition[dropped] = False
        self.frames[slot] = frame
        self.since_start[slot] = since_start
        self.newest = slot
        self.size = min(self.size + 1, self.capacity)

    def add(self, obs, next_obs, action, reward, terminal, game_over, is_transition=True) -> int:
        """Stores one transition (obs and next_obs: (4, 84, 84) stacks; only a game's first obs is read) and returns
        its slot. The reward is clipped to its sign; terminal (game over or life lost) stops the bootstrap; game_over
        (terminated or truncated): the next transition starts a new game. is_transition=False (a forced FIRE) stores
        the frame, so that the stacks around it stay exact, but nothing samples its slot; its next_obs starts a stack.
        """
        if self.starting_game:
            if (obs != obs[-1]).any():
                raise ValueError("a game's first obs must be a reset obs: four copies of the game's first frame")
            self._write_frame(obs[-1], since_start=0)
        slot = self.newest
        since_start = min(int(self.since_start[slot]) + 1, self.stack - 1) if is_transition else 0
        self._write_frame(next_obs[-1], since_start=since_start)
        self.actions[slot] = action
        self.rewards[slot] = np.sign(reward)
        self.terminals[slot] = terminal
        self.is_transition[slot] = bool(is_transition)
        self.num_transitions += bool(is_transition)
        self.starting_game = bool(game_over)
        return slot

    def get(self, slots: np.ndarray, device: torch.device | str = "cpu") -> Transitions:
        """The transitions stored at these slots as tensors on the device, stacks rebuilt (one gather for the batch)."""
        offsets = np.arange(-self.stack + 1, 2)  # frames i-3 .. i+1: obs is the first 4, next_obs the last 4
        # the slots before the stack's start hold another game's or life's frames: read its first frame instead.
        # E.g. two frames after the start f0 (since_start 2): offset -3 reads -2, so obs is (f0, f0, f1, f2) and
        # next_obs (f0, f1, f2, f3)
        offsets = np.maximum(offsets, -self.since_start[slots, None].astype(np.int64))  # (batch, 5)
        frames = self.frames[(slots[:, None] + offsets) % self.capacity]  # (batch, 5, 84, 84), a copy
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
        redraw = ~self.is_transition[slots]
        while redraw.any():  # the few slots without a transition (games' final frames) are drawn again
            slots[redraw] = self.rng.integers(0, self.size, int(redraw.sum()))
            redraw = ~self.is_transition[slots]
        return slots

    def sample(self, batch_size: int, device: torch.device | str = "cpu") -> Transitions:
        return self.get(self.sample_slots(batch_size), device)

    def sample_states(self, n: int, generator: torch.Generator, device: torch.device | str = "cpu") -> torch.Tensor:
        """n distinct stored obs (frame stacks), drawn with the given generator (diagnostics' probe states)."""
        slots = np.flatnonzero(self.is_transition)
        slots = slots[torch.randperm(len(slots), generator=generator)[:n].numpy()]
        return self.get(np.sort(slots), device).obs


def td_targets(rewards, next_q_values, terminals, gamma: float) -> torch.Tensor:
    """Q-learning targets r + gamma * max_a' Q_target(s', a') from the target network's Q-values of next_obs, without
    the bootstrap where terminals is 1 (a game over or a lost life; a time-limit truncation bootstraps)."""
    return rewards + gamma * next_q_values.max(dim=1).values * (1.0 - terminals)


def td_loss(q_values, actions, targets) -> tuple[torch.Tensor, torch.Tensor]:
    """The mean squared TD error of the actions taken, and their Q-values Q(s, a) (batch,)."""
    q_taken = q_values.gather(1, actions[:, None]).squeeze(1)
    return F.mse_loss(q_taken, targets), q_taken


def train(args: Args) -> int:
    """Trains the Q-network; returns the exit status (0 finished, 75 interrupted, 1 a fault of the machine)."""
    run = run_management.Run(args, SCRIPT)  # the run folder, TensorBoard, checkpoints (SCRIPT: at the bottom)
    writer = run.writer

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

    q_network = make_network(args, num_actions).to(device)
    optimizer = torch.optim.Adam(q_network.parameters(), lr=args.learning_rate, fused=True)  # one kernel per update
    target_network = make_network(args, num_actions).to(device)
    target_network.load_state_dict(q_network.state_dict())
    rb = ReplayBuffer(args.buffer_size, seed=args.seed)
    probe_generator = torch.Generator().manual_seed(args.seed)  # diagnostics' own, not training's

    # TRY NOT TO MODIFY: start the game. Name any new stateful part here too, or --resume drifts from a full run
    parts = dict(target_network=target_network, optimizer=optimizer, replay_memory=rb, probe_generator=probe_generator)
    global_step = run.start_training(q_network, **parts)
    epsilon_duration = args.exploration_fraction * args.total_timesteps
    if args.learning_starts >= args.total_timesteps:
        run_management.say("note: --learning-starts >= --total-timesteps: this run only collects experience")

    with run:  # a bug is recorded here, then raised; a second Ctrl-C or a full disk ends the training here
        frames, info = envs.reset(seed=run.games_seed)
        obs = np.repeat(frames, 4, axis=1)  # a game starts from four copies of its first frame
        tracker = EpisodeTracker(args.num_envs, info["lives"], fire_action)
        while global_step < args.total_timesteps:
            global_step += 1  # every env step, the steps that are not the agent's too

            # ALGO LOGIC: epsilon-greedy action
            epsilon = linear_schedule(args.start_e, args.end_e, epsilon_duration, global_step)
            if random.random() < epsilon:
                actions = np.array([random.randrange(num_actions)])
            else:
                with torch.no_grad():
                    q_values = q_network(torch.from_numpy(obs).to(device))
                actions = q_values.argmax(1).cpu().numpy()

            # TRY NOT TO MODIFY: play the step, log the games that ended
            resetting = tracker.resetting[0]  # before tracker.step moves on: a reset step stores nothing below
            frames, rewards, terminations, truncations, info = envs.step(tracker.with_forced_fire(actions))
            is_transition, life_lost, finished = tracker.step(rewards, terminations, truncations, info["lives"])
            next_obs = stack_frames(obs, frames, ~is_transition)  # fresh after a step not the agent's
            for _, score, length in finished:
                run.recent_returns.append(score)
                writer.add_scalar("charts/episodic_return", score, global_step)
                writer.add_scalar("charts/episodic_length", length, global_step)

            # ALGO LOGIC: store the transition (rb.add clips the reward to its sign). A lost life is terminal for the
            # TD target while the game goes on; a time-limit truncation is not (next_obs is the true final obs). A
            # forced FIRE's frame is stored (later stacks need it) as no transition; a reset step stores nothing.
            if not resetting:
                terminal, game_over = terminations[0] or life_lost[0], terminations[0] or truncations[0]
                rb.add(obs[0], next_obs[0], actions[0], rewards[0], terminal, game_over, is_transition[0])
            obs = next_obs

            # ALGO LOGIC: training
            if global_step > args.learning_starts and global_step % args.train_frequency == 0:
                data = rb.sample(args.batch_size, device)
                with torch.no_grad():
                    td_target = td_targets(data.rewards, target_network(data.next_obs), data.terminals, args.gamma)
                loss, q_taken = td_loss(q_network(data.obs), data.actions, td_target)

                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

                if global_step % 100 == 0:
                    writer.add_scalar("losses/td_loss", loss, global_step)
                    writer.add_scalar("losses/q_values", q_taken.mean(), global_step)

            # update the target network: target <- tau * online + (1 - tau) * target, a hard copy with tau = 1
            if global_step > args.learning_starts and global_step % args.target_network_frequency == 0:
                with torch.no_grad():
                    for target_param, param in zip(target_network.parameters(), q_network.parameters()):
                        target_param.lerp_(param, args.tau)

            # diagnostics on states sampled from the replay memory, once every diagnostics_interval steps
            if args.diagnostics_interval > 0 and global_step % args.diagnostics_interval == 0:
                if len(rb) < args.diagnostics_samples:
                    run_management.say(f"diagnostics skipped at step {global_step}: {len(rb)} states stored so far")
                else:
                    probe_obs = rb.sample_states(args.diagnostics_samples, probe_generator, device)
                    layers = diagnostics.capture_activations(q_network, probe_obs)
                    diagnostics.log_diagnostics(writer, global_step, layers, hidden_activation=args.activation,
                                                dead_threshold=args.dead_threshold, dormant_tau=args.dormant_tau,
                                                save_dir=run.activations_dir)  # fmt: skip
            if global_step % 100 == 0:
                writer.add_scalar("charts/epsilon", epsilon, global_step)
                run.log_progress(global_step)  # charts/SPS, and a console line every few seconds

            # TRY NOT TO MODIFY: between two steps the run is whole: checkpoint it now and then, stop when asked
            if args.checkpoint_interval > 0 and global_step % args.checkpoint_interval == 0:
                run.save_checkpoint(global_step)
            if run.stop_requested:
                break
    envs.close()

    # TRY NOT TO MODIFY: keep what the run reached (--save-model: evaluate it once trained), record how it ended
    return run.finish(global_step, training_over=global_step >= args.total_timesteps, device=device)


def evaluate(model_path: str, args: Args, device: torch.device, stop, videos=None) -> list[float]:
    """The saved model plays one full game in each of eval_episodes envs (so that short games are not favoured),
    epsilon-greedy with epsilon end_e; returns the scores, and a signal stops it early.
    With videos (--capture-video) the same games are played in colour beside the agent's, and recorded."""
    settings = (args.env_id, args.eval_episodes, args.max_episode_frames, args.repeat_action_probability)
    envs = make_env(*settings)
    fire_action = find_fire_action(envs) if args.fire_on_life_loss else None
    num_actions = envs.single_action_space.n
    q_network = make_network(args, num_actions).to(device)
    q_network.load_state_dict(torch.load(model_path, map_location=device, weights_only=True))
    frames, info = envs.reset(seed=args.seed + args.num_envs)  # games the training envs did not start from
    if videos:  # the colour screens of the same games: the same seed, then the same actions
        videos.play_along(make_env(*settings, colour=True), seed=args.seed + args.num_envs)
    obs = np.repeat(frames, 4, axis=1)  # a game starts from four copies of its first frame
    tracker, scores = EpisodeTracker(args.eval_episodes, info["lives"], fire_action), {}
    run_management.say(f"evaluation: {args.eval_episodes} games")
    try:
        while len(scores) < args.eval_episodes and not stop:
            with torch.no_grad():
                q_values = q_network(torch.as_tensor(obs, device=device))
            explore = torch.rand(args.eval_episodes, device=device) < args.end_e
            random_actions = torch.randint(num_actions, (args.eval_episodes,), device=device)
            actions = torch.where(explore, random_actions, q_values.argmax(dim=1)).cpu().numpy()
            actions = tracker.with_forced_fire(actions)
            frames, rewards, terminations, truncations, info = envs.step(actions)
            if videos:
                videos.step(actions, info)
            is_transition, _, finished = tracker.step(rewards, terminations, truncations, info["lives"])
            obs = stack_frames(obs, frames, ~is_transition)
            for env, score, _ in finished:
                if env not in scores:  # only each env's first game counts
                    scores[env] = score
                    said = f"evaluation: game {len(scores)}/{args.eval_episodes} returned {score:.1f}"
                    run_management.say(said + (f": video {videos.save(env, len(scores))}" if videos else ""))
    except KeyboardInterrupt:  # a second signal
        pass
    envs.close()
    return list(scores.values())


# the ranges of this algorithm's own arguments, then its other rules
ARGUMENT_RANGES = {
    "must be positive": ("batch_size", "train_frequency", "target_network_frequency"),
    "must lie in [0, 1]": ("start_e", "end_e", "exploration_fraction"),
    "must lie in (0, 1]": ("tau",),
}


def argument_rules(args: Args) -> list[tuple[bool, str]]:
    memory_needed = args.buffer_size * (84 * 84 + 8)  # a frame and 8 bytes of bookkeeping per slot
    memory_here = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return diagnostics.argument_rules(args) + [  # the diagnostics' rules, then this algorithm's
        (args.num_envs != 1, f"--num-envs must be 1: this DQN plays one game at a time (got {args.num_envs})"),
        (args.learning_starts < 1, "--learning-starts must be at least 1: learning samples transitions already stored"),
        (
            args.buffer_size < max(args.batch_size, 5),
            f"--buffer-size ({args.buffer_size}) must be at least --batch-size ({args.batch_size}) and at least 5",
        ),
        (
            memory_needed > memory_here,
            f"--buffer-size ({args.buffer_size:,}) needs {memory_needed / 2**30:.1f} GiB for the replay memory, "
            f"more than this machine's {memory_here / 2**30:.1f} GiB",
        ),
        (
            args.diagnostics_interval > 0 and args.diagnostics_samples > args.buffer_size,
            f"--diagnostics-samples ({args.diagnostics_samples}) must be at most --buffer-size ({args.buffer_size})",
        ),
    ]


SCRIPT = run_management.Script(__file__, Args, make_network, evaluate, ARGUMENT_RANGES, argument_rules)

if __name__ == "__main__":
    run_management.main(SCRIPT, train)
