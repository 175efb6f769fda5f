"""PQN on Atari with the Hadamard representation (Kooi, Hoogendoorn, Francois-Lavet 2024, arXiv 2406.09079).

PQN (Gallici et al. 2024, arXiv 2407.04811) is Q-learning without a target network and without a replay buffer:
many envs play in parallel, every rollout is learnt from right away with Q(lambda) targets, and LayerNorm before
every activation keeps it stable. The network's final hidden layer is the element-wise product of two tanh
layers, h = tanh(LN(W1 z + b1)) * tanh(LN(W2 z + b2)); --no-hadamard gives the plain layer tanh(LN(W z + b)).

Run:
    python pqn_atari_hadamard.py --env-id Breakout-v5
    python pqn_atari_hadamard.py --env-id Breakout-v5 --no-hadamard --hidden-dim 1024   # parameter-matched baseline
    python pqn_atari_hadamard.py --env-id Breakout-v5 --activation relu --no-hadamard   # PQN's own network
Watch:  tensorboard --logdir runs      Diagnostics offline:  python diagnostics.py runs/<run>
Stop:   Ctrl-C saves a checkpoint and exits 75; continue with --resume runs/<run> (docs/long-runs.md)
"""

import os
import random
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro

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
    learning_rate: float = 2.5e-4  # the learning rate of the RAdam optimizer
    num_envs: int = 128  # the number of parallel game environments
    num_steps: int = 32  # the number of steps to run in each environment per rollout
    anneal_lr: bool = False  # if toggled, the learning rate decays linearly to 0 (PQN keeps it constant)
    gamma: float = 0.99  # the discount factor gamma
    q_lambda: float = 0.65  # the lambda of the Q(lambda) targets (0 gives one-step Q-learning targets)
    num_minibatches: int = 32  # the number of minibatches per epoch
    update_epochs: int = 2  # the number of epochs over each rollout
    max_grad_norm: float = 10.0  # the maximum norm for the gradient clipping
    start_e: float = 1.0  # the starting epsilon for exploration
    end_e: float = 0.001  # the ending epsilon for exploration (also the evaluation's epsilon)
    exploration_fraction: float = 0.10  # the fraction of `total_timesteps` it takes from start_e to go to end_e
    batch_size: tyro.conf.Suppress[int] = 0  # computed at run time: num_envs * num_steps, the steps of a rollout
    minibatch_size: tyro.conf.Suppress[int] = 0  # computed at run time, logged only: the agent's steps are split
    num_iterations: tyro.conf.Suppress[int] = 0  # computed at run time: total_timesteps // batch_size, the rollouts

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


def flax_init_(weight: torch.Tensor, scale: float) -> None:
    """flax's variance_scaling(scale, "fan_in", "truncated_normal"): a normal cut at two of its standard deviations,
    widened so that the weights' std is sqrt(scale / fan_in). scale 2 is He-normal, 1 is LeCun-normal."""
    fan_in = weight[0].numel()  # a conv's input channels x kernel area, a linear layer's inputs
    std = (scale / fan_in) ** 0.5 / 0.87962566103423978  # the std of a standard normal cut at +-2
    nn.init.trunc_normal_(weight, std=std, a=-2 * std, b=2 * std)


class QNetwork(nn.Module):
    """Nature-CNN convolutions (ReLU) -> representation -> one Q-value per action, LayerNorm before every activation.

    The representation is the paper's Hadamard product act(LN(W1 z + b1)) * act(LN(W2 z + b2)) of two independently
    parameterised layers; with hadamard=False it is the plain layer act(LN(W z + b)). Built as purejaxql builds PQN's
    network: a conv output is normalised over its channels at each position (flax's LayerNorm on NHWC), with a
    learnt scale and shift per channel (epsilon 1e-6, flax's); He-normal convs and hidden layer (both Hadamard
    branches), a LeCun-normal Q head (flax's default), all biases zero.
    """

    def __init__(self, num_actions: int, activation: str = "tanh", hadamard: bool = True, hidden_dim: int = 512):
        super().__init__()
        self.conv1 = nn.Conv2d(4, 32, 8, stride=4)
        self.conv1_norm = nn.LayerNorm(32, eps=1e-6)
        self.conv2 = nn.Conv2d(32, 64, 4, stride=2)
        self.conv2_norm = nn.LayerNorm(64, eps=1e-6)
        self.conv3 = nn.Conv2d(64, 64, 3, stride=1)
        self.conv3_norm = nn.LayerNorm(64, eps=1e-6)
        self.act = ACTIVATIONS[activation]
        self.hadamard = hadamard
        if hadamard:
            self.hadamard_a = nn.Linear(64 * 7 * 7, hidden_dim)
            self.hadamard_a_norm = nn.LayerNorm(hidden_dim, eps=1e-6)
            self.hadamard_b = nn.Linear(64 * 7 * 7, hidden_dim)
            self.hadamard_b_norm = nn.LayerNorm(hidden_dim, eps=1e-6)
        else:
            self.dense = nn.Linear(64 * 7 * 7, hidden_dim)
            self.dense_norm = nn.LayerNorm(hidden_dim, eps=1e-6)
        self.q_head = nn.Linear(hidden_dim, num_actions)
        for layer in self.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                flax_init_(layer.weight, 2.0 if layer is not self.q_head else 1.0)
                nn.init.zeros_(layer.bias)

    @staticmethod
    def channel_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
        """LayerNorm over the channels at each position of an NCHW tensor."""
        return norm(x.movedim(1, -1)).movedim(-1, 1)

    def layer_outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every hidden layer's output by name (diagnostics read these); the last one is the representation."""
        x = x / 255.0
        outputs = {}
        outputs["conv1"] = x = F.relu(self.channel_norm(self.conv1_norm, self.conv1(x)))
        outputs["conv2"] = x = F.relu(self.channel_norm(self.conv2_norm, self.conv2(x)))
        outputs["conv3"] = x = F.relu(self.channel_norm(self.conv3_norm, self.conv3(x)))
        z = x.flatten(1)
        if self.hadamard:
            outputs["hadamard_a"] = a = self.act(self.hadamard_a_norm(self.hadamard_a(z)))
            outputs["hadamard_b"] = b = self.act(self.hadamard_b_norm(self.hadamard_b(z)))
            outputs["representation"] = a * b
        else:
            outputs["representation"] = self.act(self.dense_norm(self.dense(z)))
        return outputs

    def representation(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_outputs(x)["representation"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Q-values (batch, num_actions) of uint8 observations (batch, 4, 84, 84)."""
        return self.q_head(self.representation(x))


def make_network(args: Args, num_actions: int) -> QNetwork:  # training, evaluation and --resume all build it here
    return QNetwork(num_actions, args.activation, args.hadamard, args.hidden_dim)


def linear_schedule(start_e: float, end_e: float, duration: float, t: int) -> float:
    """Epsilon at step t: from start_e down to end_e over `duration` steps, then constant."""
    if duration <= 0:
        return end_e
    return start_e + (end_e - start_e) * min(t / duration, 1.0)


def q_lambda_returns(
    rewards: torch.Tensor,
    terminals: torch.Tensor,
    max_q: torch.Tensor,
    is_transition: torch.Tensor,
    gamma: float,
    q_lambda: float,
) -> torch.Tensor:
    """Q(lambda) targets (PQN paper), backwards over a rollout of steps t = 0, ..., num_steps - 1:

        G[t] = r[t] + gamma * (1 - terminal[t]) * (lambda * G[t + 1] + (1 - lambda) * maxQ(obs[t + 1]))
        with G[num_steps] = maxQ(obs[num_steps]), the obs after the rollout.

    rewards, terminals (1 where a life was lost or the game ended at step t) and is_transition (False on the steps
    that are not the agent's) are (num_steps, num_envs); max_q (num_steps + 1, num_envs) holds maxQ(obs[t]) cached
    during the rollout and, last, maxQ(obs[num_steps]). Where step t + 1 is no transition, G[t + 1] is replaced by
    maxQ(obs[t + 1]), the max-Q of the obs step t returned: the recursion stops there, and a truncated game
    bootstraps from its final obs. Such a step's own target is meaningless; the update leaves it out of the batch.
    lambda = 0 gives the one-step targets.
    """
    returns = torch.zeros_like(rewards)
    next_return = max_q[-1]
    for t in reversed(range(len(rewards))):
        bootstrap = q_lambda * next_return + (1 - q_lambda) * max_q[t + 1]
        returns[t] = rewards[t] + gamma * (1 - terminals[t]) * bootstrap
        # step t - 1 must not look through a reset or forced FIRE step into another game or life
        next_return = torch.where(is_transition[t], returns[t], max_q[t])
    return returns


def q_lambda_loss(q_values, actions, returns) -> tuple[torch.Tensor, torch.Tensor]:
    """0.5 * the mean squared error of Q(s, a) against the Q(lambda) targets.

    q_values (batch, num_actions); actions and returns (batch,), transitions only (the update leaves reset and
    forced FIRE steps out). Returns the loss and the mean Q(s, a) (detached, for logging).
    """
    q_taken = q_values.gather(1, actions[:, None]).squeeze(1)
    loss = 0.5 * (q_taken - returns).square().mean()
    return loss, q_taken.detach().mean()


def transition_minibatches(is_transition: torch.Tensor, num_minibatches: int) -> tuple[torch.Tensor, ...]:
    """One epoch's minibatches: the indices where the flat is_transition is True, shuffled, in num_minibatches
    parts. The steps that are not the agent's have no target: they are left out, not weighted 0."""
    b_inds = torch.nonzero(is_transition).flatten()
    return torch.tensor_split(b_inds[torch.randperm(len(b_inds), device=b_inds.device)], num_minibatches)


def train(args: Args) -> int:
    """Trains the Q-network; returns the exit status (0 finished, 75 interrupted, 1 a fault of the machine)."""
    args.batch_size = args.num_envs * args.num_steps
    args.minibatch_size = args.batch_size // args.num_minibatches
    args.num_iterations = args.total_timesteps // args.batch_size
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
    optimizer = torch.optim.RAdam(q_network.parameters(), lr=args.learning_rate, foreach=True)
    probe_generator = torch.Generator(device=device).manual_seed(args.seed)  # diagnostics' own, not training's

    # ALGO LOGIC: rollout storage: what the network reads on the device, what the env returns on the host
    obs = torch.zeros((args.num_steps, args.num_envs, 4, 84, 84), dtype=torch.uint8, device=device)
    actions = torch.zeros((args.num_steps, args.num_envs), dtype=torch.long, device=device)
    max_q = torch.zeros((args.num_steps + 1, args.num_envs), device=device)  # and maxQ of the obs after the rollout
    rewards = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)
    terminals = np.zeros((args.num_steps, args.num_envs), dtype=np.float32)  # game over or lost life: no bootstrap
    is_transition = np.zeros((args.num_steps, args.num_envs), dtype=bool)  # False on the steps not the agent's

    # TRY NOT TO MODIFY: start the games. Name any new stateful part here too, or --resume drifts from a full run
    actions_sent = run_management.ActionLog(args.num_envs)  # --resume plays the games again with them
    global_step = run.start_training(
        q_network, optimizer=optimizer, probe_generator=probe_generator, actions_sent=actions_sent
    )
    epsilon_duration = args.exploration_fraction * args.total_timesteps

    with run:  # a bug is recorded here, then raised; a second Ctrl-C or a full disk ends the training here
        frames, info = envs.reset(seed=run.games_seed)
        stacks = np.repeat(frames, 4, axis=1)  # a game starts from four copies of its first frame
        tracker = EpisodeTracker(args.num_envs, info["lives"], fire_action)
        for sent in actions_sent.replay():  # resumed: the games played again to where the checkpoint left them
            frames, reward, terminations, truncations, info = envs.step(sent)
            stacks = stack_frames(stacks, frames, ~tracker.step(reward, terminations, truncations, info["lives"])[0])
        next_obs = torch.from_numpy(stacks).to(device)
        for iteration in range(global_step // args.batch_size + 1, args.num_iterations + 1):
            if args.anneal_lr:
                frac = 1.0 - (iteration - 1.0) / args.num_iterations
                optimizer.param_groups[0]["lr"] = frac * args.learning_rate

            for step in range(args.num_steps):
                global_step += args.num_envs
                epsilon = linear_schedule(args.start_e, args.end_e, epsilon_duration, global_step)

                # ALGO LOGIC: epsilon-greedy actions, each env exploring on its own, all on the device
                with torch.no_grad():
                    best_q, greedy_actions = q_network(next_obs).max(dim=1)
                explore = torch.rand(args.num_envs, device=device) < epsilon
                random_actions = torch.randint(num_actions, (args.num_envs,), device=device)
                action = torch.where(explore, random_actions, greedy_actions)

                # TRY NOT TO MODIFY: play the step; the envs play it in their threads while the device stores the step
                sent = tracker.with_forced_fire(action.cpu().numpy())  # FIRE after a lost life, if forced
                envs.send(sent)
                actions_sent.append(sent)
                obs[step] = next_obs
                actions[step] = action
                max_q[step] = best_q
                frames, reward, terminations, truncations, info = envs.recv()
                is_transition[step], life_lost, finished = tracker.step(
                    reward, terminations, truncations, info["lives"]
                )
                stacks = stack_frames(stacks, frames, ~is_transition[step])  # fresh after a step not the agent's
                next_obs = torch.as_tensor(stacks, device=device)
                rewards[step] = np.sign(reward)  # rewards clipped to their sign for learning
                # a lost life is terminal for learning; a game cut by the time limit is not: next_obs is its true final
                # obs, whose max-Q the next (reset) step computes and Q(lambda) bootstraps from (see q_lambda_returns)
                terminals[step] = is_transition[step] & (terminations | life_lost)
                for _, score, length in finished:
                    run.recent_returns.append(score)
                    writer.add_scalar("charts/episodic_return", score, global_step)
                    writer.add_scalar("charts/episodic_length", length, global_step)

            # ALGO LOGIC: Q(lambda) targets from the max-Q values cached while acting, fixed over the epochs below:
            # they stand in for a target network
            with torch.no_grad():
                max_q[args.num_steps] = q_network(next_obs).max(dim=1).values
            r, term, trans = (torch.from_numpy(x).to(device) for x in (rewards, terminals, is_transition))
            returns = q_lambda_returns(r, term, max_q, trans, args.gamma, args.q_lambda)

            # flatten the batch
            b_obs = obs.flatten(0, 1)
            b_actions = actions.reshape(-1)
            b_returns = returns.reshape(-1)
            b_is_transition = trans.reshape(-1)

            # ALGO LOGIC: optimise 0.5 * MSE(Q(s, a), G) over update_epochs epochs of num_minibatches minibatches
            loss_sums = {}  # by name, summed over all minibatches, averaged when logged
            num_minibatch_updates = 0
            for epoch in range(args.update_epochs):
                for mb in transition_minibatches(b_is_transition, args.num_minibatches):
                    loss, q_mean = q_lambda_loss(q_network(b_obs[mb]), b_actions[mb], b_returns[mb])

                    optimizer.zero_grad()
                    loss.backward()
                    nn.utils.clip_grad_norm_(q_network.parameters(), args.max_grad_norm)
                    optimizer.step()
                    for name, value in dict(td_loss=loss, q_values=q_mean).items():
                        loss_sums[name] = loss_sums.get(name, 0.0) + value.detach()
                    num_minibatch_updates += 1

            # TRY NOT TO MODIFY: record losses for plotting purposes (one host copy per update)
            mean_losses = (torch.stack(list(loss_sums.values())) / num_minibatch_updates).tolist()
            for name, value in zip(loss_sums, mean_losses):
                writer.add_scalar(f"losses/{name}", value, global_step)
            writer.add_scalar("charts/epsilon", epsilon, global_step)
            writer.add_scalar("charts/learning_rate", optimizer.param_groups[0]["lr"], global_step)

            # diagnostics on a random sample of the states of the rollout that passes a multiple of the interval
            if args.diagnostics_interval > 0 and global_step % args.diagnostics_interval < args.batch_size:
                probe = torch.randperm(args.batch_size, generator=probe_generator, device=device)
                layers = diagnostics.capture_activations(q_network, b_obs[probe[: args.diagnostics_samples]])
                diagnostics.log_diagnostics(writer, global_step, layers, hidden_activation=args.activation,
                                            dead_threshold=args.dead_threshold, dormant_tau=args.dormant_tau,
                                            save_dir=run.activations_dir)  # fmt: skip
            run.log_progress(global_step)  # charts/SPS, and a console line every few seconds

            # TRY NOT TO MODIFY: between two rollouts the run is whole: checkpoint it now and then, stop when asked
            if args.checkpoint_interval > 0 and global_step % args.checkpoint_interval < args.batch_size:
                run.save_checkpoint(global_step)
            if run.stop_requested:
                break
    envs.close()

    # TRY NOT TO MODIFY: keep what the run reached (--save-model: evaluate it once trained), record how it ended
    return run.finish(global_step, training_over=global_step >= args.num_iterations * args.batch_size, device=device)


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
    "must be positive": ("num_steps", "num_minibatches", "update_epochs", "max_grad_norm"),
    "must lie in [0, 1]": ("q_lambda", "start_e", "end_e", "exploration_fraction"),
}


def argument_rules(args: Args) -> list[tuple[bool, str]]:
    batch = args.num_envs * args.num_steps
    rollout = f"--num-envs * --num-steps ({args.num_envs} * {args.num_steps} = {batch})"
    return diagnostics.argument_rules(args) + [  # the diagnostics' rules, then this algorithm's
        (batch % args.num_minibatches != 0, f"--num-minibatches ({args.num_minibatches}) must divide {rollout}"),
        (
            batch // args.num_minibatches < 2,
            "minibatches need at least 2 samples (the steps not the agent's are left out)",
        ),
        (
            args.total_timesteps < batch,
            f"--total-timesteps ({args.total_timesteps}) is less than one rollout, {rollout}",
        ),
        (
            args.diagnostics_interval > 0 and args.diagnostics_samples > batch,
            f"--diagnostics-samples ({args.diagnostics_samples}) must be at most the states of one rollout, {rollout}",
        ),
    ]


SCRIPT = run_management.Script(__file__, Args, make_network, evaluate, ARGUMENT_RANGES, argument_rules)

if __name__ == "__main__":
    run_management.main(SCRIPT, train)
