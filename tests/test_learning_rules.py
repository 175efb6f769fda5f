"""The learning rules of the three scripts: each loss and target against hand-computed values, then one optimiser
step of the real network on a fixed small batch, which must move the network the way the rule says."""

import copy

import numpy as np
import pytest
import torch

import dqn_atari_hadamard as dqn
import ppo_atari_hadamard as ppo
import pqn_atari_hadamard as pqn


def tensor(*values):
    return torch.tensor(values, dtype=torch.float32)


def random_frames(n, seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 4, 84, 84), dtype=torch.uint8, generator=generator)


# ---------------------------------------------------------------------------------------------------------
# DQN: TD target and loss
# ---------------------------------------------------------------------------------------------------------
def test_dqn_targets_bootstrap_from_the_best_next_action_unless_terminal():
    rewards = tensor(1, -1, 0, 1, 0)
    next_q_values = torch.tensor([[1.0, 3.0], [2.0, -4.0], [-1.0, -2.0], [5.0, 6.0], [-7.0, 8.0]])
    terminals = tensor(0, 0, 0, 1, 1)
    targets = dqn.td_targets(rewards, next_q_values, terminals, gamma=0.5)
    # non-terminal: r + 0.5 * max_a' Q(s', a'), also when the best next value is negative;
    # terminal (game over or life lost): r alone, whatever the next Q-values
    assert targets.tolist() == [1 + 0.5 * 3, -1 + 0.5 * 2, 0 + 0.5 * -1, 1.0, 0.0]


def test_dqn_loss_is_the_mean_squared_error_of_the_actions_taken():
    q_values = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], requires_grad=True)
    actions = torch.tensor([1, 0, 1])
    targets = tensor(0, 3, 8)
    loss, q_taken = dqn.td_loss(q_values, actions, targets)
    assert q_taken.tolist() == [2.0, 3.0, 6.0]
    assert loss.item() == pytest.approx((2**2 + 0**2 + 2**2) / 3)
    loss.backward()
    # d loss / d Q(s, a) = 2 (Q(s, a) - y) / batch for the action taken; the other actions get no gradient
    torch.testing.assert_close(q_values.grad, torch.tensor([[0.0, 4 / 3], [0.0, 0.0], [0.0, -4 / 3]]))


def test_dqn_one_update_lowers_the_td_loss_and_moves_q_towards_its_target():
    torch.manual_seed(0)
    n = 16
    obs, next_obs = random_frames(n, seed=1), random_frames(n, seed=2)
    actions = torch.arange(n) % 4
    rewards = tensor(1, -1, 0, 1).repeat(4)
    terminals = tensor(0, 0, 1, 1).repeat(4)
    q_network = dqn.QNetwork(4, hidden_dim=64)
    target_network = copy.deepcopy(q_network)
    optimizer = torch.optim.Adam(q_network.parameters(), lr=dqn.Args().learning_rate)
    gamma = dqn.Args().gamma

    with torch.no_grad():
        next_q_values = target_network(next_obs)
        targets = dqn.td_targets(rewards, next_q_values, terminals, gamma)
    # the targets the rule must give, written out here
    expected = rewards + gamma * (1 - terminals) * next_q_values.max(dim=1).values
    torch.testing.assert_close(targets, expected)

    loss, q_before = dqn.td_loss(q_network(obs), actions, targets)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        loss_after, q_after = dqn.td_loss(q_network(obs), actions, targets)
        expected_loss_after = ((q_after - expected) ** 2).mean()

    assert loss_after < loss
    torch.testing.assert_close(loss_after, expected_loss_after)
    step = q_after - q_before.detach()
    below = expected > q_before.detach()  # Q(s, a) must rise towards these targets and fall towards the others
    assert 0 < below.sum() < n
    assert step[below].mean() > 0 and step[~below].mean() < 0


# ---------------------------------------------------------------------------------------------------------
# PPO: clipped policy loss, clipped value loss, entropy bonus
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "advantage, ratio, loss, gradient",
    [
        # inside [1 - eps, 1 + eps] the loss is -A * ratio and d loss / d log pi = -A * ratio
        (2.0, 1.1, -2.2, -2.2),
        (-2.0, 0.9, 1.8, 1.8),
        # positive advantage above 1 + eps: clipped, constant (no gain for pushing the ratio further)
        (2.0, 1.5, -2.4, 0.0),
        # negative advantage below 1 - eps: clipped, constant
        (-2.0, 0.5, 1.6, 0.0),
        # the pessimistic side is never clipped: positive advantage below 1 - eps, negative above 1 + eps
        (2.0, 0.5, -1.0, -1.0),
        (-2.0, 1.5, 3.0, 3.0),
    ],
)
def test_ppo_policy_loss_clips_on_the_optimistic_side_only(advantage, ratio, loss, gradient):
    new_logprobs = torch.tensor([float(torch.log(torch.tensor(ratio)))], requires_grad=True)
    old_logprobs = torch.zeros(1)
    result = ppo.clipped_policy_loss(new_logprobs, old_logprobs, tensor(advantage), clip_coef=0.2, norm_adv=False)
    assert result.item() == pytest.approx(loss, rel=1e-6)
    result.backward()
    assert new_logprobs.grad.item() == pytest.approx(gradient, rel=1e-6, abs=1e-7)


def test_ppo_policy_loss_uses_the_ratio_of_new_to_old_probabilities():
    old_logprobs = tensor(-1.0, -2.0)
    new_logprobs = old_logprobs + torch.log(tensor(1.1, 0.95))
    result = ppo.clipped_policy_loss(new_logprobs, old_logprobs, tensor(1.0, -3.0), clip_coef=0.2, norm_adv=False)
    assert result.item() == pytest.approx((-1.0 * 1.1 + 3.0 * 0.95) / 2, rel=1e-6)


def test_ppo_policy_loss_normalises_the_minibatch_advantages():
    ratios = tensor(1.0, 1.0, 1.05)
    advantages = tensor(1.0, 2.0, 3.0)  # mean 2, standard deviation 1: normalised to -1, 0, 1
    loss = ppo.clipped_policy_loss(torch.log(ratios), torch.zeros(3), advantages, clip_coef=0.1, norm_adv=True)
    assert loss.item() == pytest.approx((1.0 * 1.0 + 0.0 - 1.0 * 1.05) / 3, abs=1e-6)
    raw = ppo.clipped_policy_loss(torch.log(ratios), torch.zeros(3), advantages, clip_coef=0.1, norm_adv=False)
    assert raw.item() == pytest.approx(-(1.0 + 2.0 + 3 * 1.05) / 3, rel=1e-6)


@pytest.mark.parametrize(
    "new_value, loss, gradient",
    [
        (0.95, 0.5 * 1.05**2, -1.05),  # within eps of the old value: the plain error
        (1.5, 0.5 * 0.9**2, 0.0),  # moved past old + eps towards the return: the clipped error, no gradient
        (0.5, 0.5 * 1.5**2, -1.5),  # moved away from the return: the larger, unclipped error
    ],
)
def test_ppo_value_loss_is_clipped_around_the_old_value(new_value, loss, gradient):
    new_values = torch.tensor([[new_value]], requires_grad=True)  # the critic's (batch, 1) output
    result = ppo.clipped_value_loss(new_values, old_values=tensor(1.0), returns=tensor(2.0), clip_coef=0.1)
    assert result.item() == pytest.approx(loss, rel=1e-6)
    result.backward()
    assert new_values.grad.item() == pytest.approx(gradient, rel=1e-5, abs=1e-7)


def test_ppo_value_loss_without_clipping_is_half_the_mean_squared_error():
    new_values = torch.tensor([[1.5], [0.0]], requires_grad=True)
    result = ppo.clipped_value_loss(new_values, tensor(1.0, 0.0), tensor(2.0, -1.0), clip_coef=0.1, clip=False)
    assert result.item() == pytest.approx(0.5 * (0.5**2 + 1.0**2) / 2)
    result.backward()
    torch.testing.assert_close(new_values.grad, torch.tensor([[-0.25], [0.5]]))


def test_ppo_loss_subtracts_the_entropy_bonus_and_weighs_the_value_loss():
    total = ppo.ppo_loss(tensor(1.0), tensor(2.0), tensor(3.0), ent_coef=0.1, vf_coef=0.5)
    assert total.item() == pytest.approx(1.0 - 0.1 * 3.0 + 0.5 * 2.0)


def ppo_update(agent, obs, actions, advantages, returns, args, old_logprobs=None, old_values=None):
    """One minibatch update as the script does it: the three loss terms, gradient clipping, one Adam step."""
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    _, logprobs, entropy, values = agent.get_action_and_value(obs, actions)
    old_logprobs = logprobs.detach() if old_logprobs is None else old_logprobs
    old_values = values.detach().view(-1) if old_values is None else old_values
    pg_loss = ppo.clipped_policy_loss(logprobs, old_logprobs, advantages, args.clip_coef, args.norm_adv)
    v_loss = ppo.clipped_value_loss(values, old_values, returns, args.clip_coef, args.clip_vloss)
    loss = ppo.ppo_loss(pg_loss, v_loss, entropy.mean(), args.ent_coef, args.vf_coef)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
    optimizer.step()


def test_ppo_one_update_follows_the_advantages_and_moves_v_towards_the_returns():
    torch.manual_seed(0)
    n = 16
    obs = random_frames(n, seed=3)
    actions = torch.arange(n) % 4
    advantages = tensor(1, -1).repeat(8) * torch.linspace(0.5, 2.0, n)
    agent = ppo.Agent(4, hidden_dim=64)
    with torch.no_grad():
        _, logprobs_before, _, values_before = agent.get_action_and_value(obs, actions)
    values_before = values_before.view(-1)
    returns = values_before + tensor(1, 1, -1, -1).repeat(4)

    ppo_update(agent, obs, actions, advantages, returns, ppo.Args())
    with torch.no_grad():
        _, logprobs_after, _, values_after = agent.get_action_and_value(obs, actions)

    # the first minibatch of an update has ratio 1: nothing is clipped, every sample follows its advantage
    change = logprobs_after - logprobs_before
    assert (change[advantages > 0] > 0).all(), "actions with a positive advantage must become more likely"
    assert (change[advantages < 0] < 0).all(), "actions with a negative advantage must become less likely"
    value_change = values_after.view(-1) - values_before
    assert (value_change[returns > values_before] > 0).all() and (value_change[returns < values_before] < 0).all()


def test_ppo_entropy_bonus_alone_makes_the_policy_less_certain():
    torch.manual_seed(0)
    obs = random_frames(8, seed=4)
    actions = torch.arange(8) % 4
    agent = ppo.Agent(4, hidden_dim=64)
    with torch.no_grad():
        agent.actor.bias.copy_(tensor(2, 0, 0, -1))  # a policy far from uniform
        _, _, entropy_before, values = agent.get_action_and_value(obs, actions)
    args = ppo.Args(ent_coef=0.01, vf_coef=0.0)
    ppo_update(agent, obs, actions, torch.zeros(8), values.view(-1), args)
    with torch.no_grad():
        _, _, entropy_after, _ = agent.get_action_and_value(obs, actions)
    assert entropy_after.mean() > entropy_before.mean()


# ---------------------------------------------------------------------------------------------------------
# PQN: Q(lambda) regression, over transitions only
# ---------------------------------------------------------------------------------------------------------
def test_pqn_loss_is_half_the_mean_squared_error_of_the_actions_taken():
    q_values = torch.tensor([[1.0, 2.0], [3.0, 4.0], [7.0, 8.0]], requires_grad=True)
    actions = torch.tensor([0, 1, 0])
    returns = tensor(2, 2, 7)
    loss, q_mean = pqn.q_lambda_loss(q_values, actions, returns)
    assert loss.item() == pytest.approx(0.5 * (1**2 + 2**2 + 0**2) / 3)
    assert q_mean.item() == pytest.approx((1 + 4 + 7) / 3)
    loss.backward()
    # d loss / d Q(s, a) = (Q(s, a) - G) / batch for the actions taken, nothing for the others
    torch.testing.assert_close(q_values.grad, torch.tensor([[-1 / 3, 0], [0, 2 / 3], [0, 0]]))


def rollout_transitions(num_steps=12):
    """The transitions flags of a real rollout of EpisodeTracker: a lost life (forced FIRE next) and a game over
    (reset step next) in env 0, nothing in env 1; flattened (num_steps * 2,) as the training loops do."""
    tracker = pqn.EpisodeTracker(2, lives=np.array([2, 3]), fire_action=1)
    transitions = np.zeros((num_steps, 2), dtype=bool)
    for t in range(num_steps):
        lives = np.array([1 if t >= 3 else 2, 3])
        game_over = np.array([t == 7, False])
        tracker.with_forced_fire(np.zeros(2, dtype=np.int64))
        transitions[t], _, _ = tracker.step(np.zeros(2), game_over, np.array([False, False]), lives)
    return torch.from_numpy(transitions.reshape(-1))


@pytest.mark.parametrize("script", [ppo, pqn], ids=["ppo", "pqn"])
def test_minibatches_hold_every_transition_once_and_no_reset_or_forced_fire_step(script):
    transitions = rollout_transitions()
    non_transitions = torch.nonzero(~transitions).flatten().tolist()
    assert non_transitions == [4 * 2, 8 * 2]  # env 0: the forced FIRE after the lost life, the reset step
    torch.manual_seed(0)
    minibatches = script.transition_minibatches(transitions, 4)
    assert len(minibatches) == 4 and {len(mb) for mb in minibatches} == {5, 6}
    chosen = torch.cat(minibatches)
    assert sorted(chosen.tolist()) == torch.nonzero(transitions).flatten().tolist()
    assert chosen.tolist() != sorted(chosen.tolist())  # shuffled


def test_pqn_one_update_moves_q_towards_g_and_ignores_reset_steps():
    torch.manual_seed(0)
    n = 16
    obs = random_frames(n, seed=5)
    actions = torch.arange(n) % 4
    transitions = torch.tensor([True] * 12 + [False] * 4)
    network = pqn.QNetwork(4, hidden_dim=64)
    initial_state = copy.deepcopy(network.state_dict())
    args = pqn.Args()

    def one_update(reset_step_targets):
        """One minibatch update as the training loop makes it: the minibatch is chosen from the transitions."""
        network.load_state_dict(initial_state)
        optimizer = torch.optim.RAdam(network.parameters(), lr=args.learning_rate, foreach=True)
        returns = torch.cat([tensor(1, -1, 2, -2).repeat(3), torch.full((4,), reset_step_targets)])
        torch.manual_seed(1)  # the same shuffle in both updates
        (mb_inds,) = pqn.transition_minibatches(transitions, 1)
        loss, _ = pqn.q_lambda_loss(network(obs[mb_inds]), actions[mb_inds], returns[mb_inds])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), args.max_grad_norm)
        optimizer.step()
        return returns, loss, copy.deepcopy(network.state_dict())

    with torch.no_grad():
        q_before = network(obs).gather(1, actions[:, None]).squeeze(1)
    returns, loss, state = one_update(1000.0)
    with torch.no_grad():
        q_after = network(obs).gather(1, actions[:, None]).squeeze(1)
        loss_after, _ = pqn.q_lambda_loss(network(obs[:12]), actions[:12], returns[:12])
    assert loss_after < loss
    change = q_after - q_before
    rise = transitions & (returns > q_before)
    fall = transitions & (returns < q_before)
    assert rise.sum() == fall.sum() == 6
    assert (change[rise] > 0).all() and (change[fall] < 0).all()
    # what the reset steps' targets say makes no difference to the update
    _, _, other_state = one_update(-1000.0)
    assert all(torch.equal(state[name], other_state[name]) for name in state)
