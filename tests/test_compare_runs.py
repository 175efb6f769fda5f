"""compare_runs.py: the statistics against known answers, and the report of small fake run folders."""

import csv
import json
import math
import os
import sys

import numpy as np
import pytest

import compare_runs as cr


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------
def test_iqm_drops_a_quarter_at_each_end():
    assert cr.iqm([8, 1, 7, 2, 6, 3, 5, 4]) == 4.5  # mean of 3, 4, 5, 6
    assert cr.iqm([1, 2, 3, 4, 100]) == 3.0  # floor(5/4) = 1 dropped at each end, as scipy's trim_mean
    assert cr.iqm([0, 0, 1, 5, 9, 100]) == 3.75  # floor(6/4) = 1: 0, 1, 5, 9 remain
    assert cr.iqm([3, 1, 2]) == 2.0  # fewer than 4: nothing dropped
    assert cr.iqm([[1, 2, 3, 4], [10, 0, 0, 10]]).tolist() == [2.5, 5.0]  # along the last axis
    with pytest.raises(ValueError):
        cr.iqm([])


def test_human_normalisation_uses_the_reference_table():
    assert len(cr.ATARI_REFERENCE_SCORES) == 57
    # Random-play scores as REFERENCE.md quotes them from Mnih et al. 2015.
    assert cr.ATARI_REFERENCE_SCORES["breakout"][0] == 1.7
    assert cr.ATARI_REFERENCE_SCORES["pong"][0] == -20.7
    assert cr.ATARI_REFERENCE_SCORES["space_invaders"][0] == 148.0
    assert round(cr.ATARI_REFERENCE_SCORES["beam_rider"][0]) == 364
    assert cr.human_normalized(1.7, "breakout") == 0.0
    assert cr.human_normalized(30.5, "breakout") == pytest.approx(1.0)
    assert cr.human_normalized(16.1, "breakout") == pytest.approx(0.5)
    assert cr.human_normalized(-3.05, "pong") == pytest.approx(0.5)
    with pytest.raises(KeyError):
        cr.human_normalized(1.0, "adventure")


MEAN, MEDIAN, IQM = cr.AGGREGATES["mean"], cr.AGGREGATES["median"], cr.AGGREGATES["iqm"]


def test_aggregates_weigh_games_and_runs_as_rliable_does():
    scores = [np.array([0.0, 1.0]), np.array([2.0]), np.array([10.0, 20.0, 30.0, 40.0])]
    assert MEAN(scores) == pytest.approx((0.5 + 2.0 + 25.0) / 3)
    assert MEDIAN(scores) == 2.0
    assert IQM(scores) == pytest.approx(np.mean([1.0, 2.0, 10.0, 20.0, 30.0]))  # 7 runs, 1 cut


def test_bootstrap_ci_known_answers():
    # Two values: the resampled means are 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4.
    assert cr.stratified_bootstrap_ci([[0.0, 1.0]], MEAN, reps=10_000, seed=0) == (0.0, 1.0)
    assert cr.stratified_bootstrap_ci([[3.0, 3.0, 3.0]], MEAN) == (3.0, 3.0)
    # The mean of 1..5 on a fixed seed: resampled means are multiples of 0.2, and the 2.5% and 97.5% percentiles
    # fall on 1.8 and 4.2, as the normal approximation 3 +- 1.96 * sqrt(2 / 5) = (1.76, 4.24) suggests.
    ci = cr.stratified_bootstrap_ci([[1.0, 2.0, 3.0, 4.0, 5.0]], MEAN, reps=10_000, seed=7)
    assert ci == pytest.approx((1.8, 4.2))
    assert ci == cr.stratified_bootstrap_ci([[1.0, 2.0, 3.0, 4.0, 5.0]], MEAN, seed=7)


def test_bootstrap_resamples_within_each_game():
    # Every replicate keeps three 0s in the first game and three 1s in the second, so the statistics cannot move;
    # a bootstrap that pooled the games would mix them and give a wide interval.
    games = [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    assert cr.stratified_bootstrap_ci(games, MEAN) == (0.5, 0.5)
    assert cr.stratified_bootstrap_ci(games, IQM) == (0.5, 0.5)
    # Games keep their own number of runs.
    assert cr.stratified_bootstrap_ci([[1.0], [2.0, 2.0, 2.0, 2.0]], IQM) == (2.0, 2.0)


def test_one_run_per_game_has_no_interval():
    mean, low, high = cr.mean_ci([4.0])
    assert mean == 4.0 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(x) for x in cr.mean_ci([]))
    # one run in every game: nothing to resample, no interval (not a zero-width one)
    assert all(math.isnan(x) for x in cr.stratified_bootstrap_ci([[0.2], [0.4]], MEAN))
    mean, low, high = cr.mean_ci([1.0, 3.0], reps=1000)
    assert mean == 2.0 and (low, high) == (1.0, 3.0)


def test_learning_curve_area_and_final_score():
    steps, returns = [10, 20, 60, 90, 130], [1.0, 3.0, 5.0, 7.0, 100.0]  # the game at 130 ends after the horizon
    curve = cr.learning_curve(steps, returns, horizon=100, points=4)  # windows (0,25], (25,50], (50,75], (75,100]
    assert curve.tolist() == [2.0, 2.0, 5.0, 7.0]  # the empty window keeps the previous value
    assert cr.area_under_curve(curve) == 4.0
    late = cr.learning_curve([60], [8.0], horizon=100, points=4)
    assert np.isnan(late[:2]).all() and late[2:].tolist() == [8.0, 8.0]
    assert cr.area_under_curve(late) == 8.0
    assert cr.final_score(steps, returns, horizon=100, last_episodes=2) == 6.0
    assert cr.final_score(steps, returns, horizon=1000, last_episodes=1) == 100.0
    assert math.isnan(cr.final_score(steps, returns, horizon=5, last_episodes=2))


def test_game_from_the_env_id():
    assert cr.game_id("Breakout-v5") == "breakout"
    assert cr.game_id("ALE/SpaceInvaders-v5") == "space_invaders"
    assert cr.game_id("ms_pacman") == "ms_pacman"
    assert cr.game_id("MontezumaRevenge-v5") == "montezuma_revenge"
    assert all(cr.game_id(rom) == rom for rom in cr.ATARI_REFERENCE_SCORES)
    assert cr.game_id("Adventure-v5") == "adventure"  # not in the table: its name, lower case


def test_algorithm_from_the_script_in_status_json():
    ppo_args = {"gae_lambda": 0.95, "exp_name": "dqn_mine"}  # an argument that only PPO has, a misleading name
    assert cr.algorithm_of({"script": "pqn_atari_hadamard.py"}, ppo_args) == "pqn"
    assert cr.algorithm_of({"script": "/home/me/dqn_atari_hadamard.py"}, ppo_args) == "dqn"
    assert cr.algorithm_of({"script": "my_variant.py"}, ppo_args) == "my_variant"
    # without the script (runs from before status.json named it): guessed from the arguments
    assert cr.algorithm_of({}, ppo_args) == "ppo"
    assert cr.algorithm_of({"status": "finished"}, {"buffer_size": 10, "exp_name": "x"}) == "dqn"
    assert cr.algorithm_of({}, {"q_lambda": 0.65}) == "pqn"
    assert cr.algorithm_of({}, {"exp_name": "pqn_atari_hadamard"}) == "pqn"
    assert cr.algorithm_of({}, {"exp_name": "mine"}) == "unknown"


def _run(game, seed, exp_name, last_step, episodes, hadamard=True, hidden_dim=512, status="finished", path=None):
    steps, returns = zip(*episodes)
    variant = cr.Variant("ppo", "tanh", hadamard, hidden_dim, exp_name)
    path = path or f"runs/{game}_{exp_name}_{seed}"
    return cr.Run(path, game, seed, variant, status, last_step, np.array(steps, float), np.array(returns, float), {})


def test_compare_groups_by_game_and_variant_up_to_the_shortest_run():
    runs = [
        _run("breakout", 1, "a", 1000, [(400, 2.0), (900, 4.0)]),
        _run("breakout", 2, "a", 500, [(400, 6.0)], status="running"),  # still in progress
        _run("breakout", 1, "a", 1000, [(400, 1.0)], hidden_dim=1024, hadamard=False),  # same name, other network
        _run("pong", 1, "a", 1000, [(900, -3.05)]),
    ]
    out = cr.compare(runs, points=2, reps=100)
    groups = {(g.game, g.variant.hidden_dim): g for g in out.groups}
    assert list(groups) == [("breakout", 512), ("breakout", 1024), ("pong", 512)]  # by game, then variant label
    # Breakout is compared up to step 500 (500 is half its runs' median step, 1,000: kept), so the game ending at 900
    # does not count: the scores 2 and 6.
    assert groups[("breakout", 512)].score[0] == 4.0 and len(groups[("breakout", 512)].scored) == 2
    assert groups[("breakout", 512)].scores.tolist() == [2.0, 6.0]
    pong = groups[("pong", 512)].score
    assert pong[0] == -3.05 and math.isnan(pong[1]) and math.isnan(pong[2]) and pong.interval == ""
    assert out.cuts == [
        "cut: breakout is compared up to step 500 (the step of its shortest run, runs/breakout_a_2); cut there: "
        "a (ppo, tanh+hadamard, 512) seed 1 (1,000); a (ppo, tanh, 1024) seed 1 (1,000)"
    ]
    # Across games: only the 512-unit variant has two games, its mean the mean of the two games' means.
    (aggregate,) = out.aggregates
    expected = np.mean([np.mean([cr.human_normalized(2.0, "breakout"), cr.human_normalized(6.0, "breakout")]), 0.5])
    assert aggregate.estimates["mean"][0] == pytest.approx(expected) and aggregate.variant.hidden_dim == 512
    assert aggregate.games == ["breakout", "pong"] and aggregate.runs_per_game == [2, 1]
    # --steps: a run that did not reach the horizon is left out.
    out = cr.compare(runs, points=2, reps=100, horizon=1000)
    scores = [(g.game, g.score[0], len(g.scored)) for g in out.groups if g.variant.hidden_dim == 512]
    assert scores == [("breakout", 3.0, 1), ("pong", -3.05, 1)]
    assert out.cuts == ["left out: runs/breakout_a_2: it reached step 500, short of --steps 1,000"]


def test_runs_of_one_variant_and_seed_stay_apart():
    runs = [
        _run("breakout", 1, "a", 1000, [(400, 2.0)], path="runs/Breakout-v5__a__1__1700000000"),
        _run("breakout", 1, "a", 1000, [(400, 8.0)], path="runs/Breakout-v5__a__1__1700009999", status="crashed"),
    ]
    out = cr.compare(runs[::-1], points=2, reps=100)
    (group,) = out.groups  # one group, its runs in the order of their folders
    assert [run.path for run in group.runs] == [r.path for r in runs] and group.scores.tolist() == [2.0, 8.0]
    text = cr.tables(out)
    # each run its own line in the runs table, by its folder, the one that did not finish marked
    assert (
        "| breakout | a (ppo, tanh+hadamard, 512) | Breakout-v5__a__1__1700000000 | finished | 1 | 1,000 | 2.00 |"
        in text
    )
    assert "| Breakout-v5__a__1__1700009999 | NOT FINISHED (crashed) | 1 | 1,000 | 8.00 |" in text
    # the estimate says that it is over two runs of one seed, one of them unfinished
    assert "| 2 runs (seed 1 repeated), 1 unfinished | 5.00 [2.00, 8.00] | 1: 2.00, 1: 8.00 |" in text


def test_one_seed_is_said_instead_of_an_interval():
    out = cr.compare([_run("breakout", 1, "a", 1000, [(400, 2.0)])], points=2, reps=100)
    text = cr.tables(out)
    assert "steps (n = 1 seed)" in text and "CI" not in text and "range" not in text
    assert (
        "| breakout | a (ppo, tanh+hadamard, 512) | 1 seed | 2.00 (n = 1 seed) | 1: 2.00 | 2.00 (n = 1 seed) |" in text
    )
    assert cr._what([1, 1]) == "n = 1 seed"
    assert cr._what([2, 3]) == "mean over seeds [range: min, max]"
    assert cr._what([20, 30]) == "mean over seeds, 95% bootstrap CI"
    assert cr._what([3, 20]) == "mean over seeds [range: min, max] below 20 seeds, from 20 95% bootstrap CI"
    assert cr._what([2, 1], stratified=True) == "95% stratified bootstrap CI where n > 1"
    assert cr._what([1, 3]) == "mean over seeds [range: min, max] where n > 1"


# ----------------------------------------------------------------------------------------------
# The command on fake run folders
# ----------------------------------------------------------------------------------------------
def _write_run(root, env_id, exp_name, seed, returns, hadamard=True, hidden_dim=512, diagnostics=None, steps=None,
               status="finished", script="ppo_atari_hadamard.py", stamp=1700000000, evaluation=(), game_steps=100,
               **more_args):  # fmt: skip
    """A run folder as the scripts write it: args.json (more_args added), status.json (None: none, as in older runs)
    and TensorBoard scalars (game i ends at step game_steps i, its length 10 i; diagnostics {step: v}: fractions v,
    srank 660 v, effective rank 100 v, the last convolution's 1 - v; the evaluation games' returns)."""
    from torch.utils.tensorboard import SummaryWriter

    folder = root / f"{env_id}__{exp_name}__{seed}__{stamp}"
    folder.mkdir(parents=True)
    args = {"exp_name": exp_name, "seed": seed, "env_id": env_id, "gae_lambda": 0.95, "activation": "tanh",
            "hadamard": hadamard, "hidden_dim": hidden_dim, **more_args}  # fmt: skip
    (folder / "args.json").write_text(json.dumps(args))
    if status is not None:
        fields = {"script": script, "status": status, "host": "node7", "pid": 4242, "updated": "2025-01-01 12:00:00"}
        (folder / "status.json").write_text(json.dumps(fields))
    writer = SummaryWriter(str(folder))
    for i, value in enumerate(returns, start=1):
        writer.add_scalar("charts/episodic_return", value, game_steps * i)
        writer.add_scalar("charts/episodic_length", 10 * i, game_steps * i)
    writer.add_scalar("charts/SPS", 100, steps or game_steps * len(returns))
    for game, value in enumerate(evaluation):
        writer.add_scalar("eval/episodic_return", value, game)
    layer = "hadamard" if hadamard else "representation"  # older Hadamard runs logged the product as `hadamard`
    for step, v in (diagnostics or {}).items():
        values = {"dead_fraction": v, "dormant_fraction": v, "srank": round(660 * v), "effective_rank": 100 * v}
        for metric in cr.DIAGNOSTIC_METRICS:
            writer.add_scalar(f"diagnostics/{metric}/{layer}", values[metric], step)
            writer.add_scalar(f"diagnostics/{metric}/conv1", 0.9, step)  # other layers are not the representation
            writer.add_scalar(f"diagnostics/{metric}/hadamard_a", 0.8, step)
            writer.add_scalar(f"diagnostics/{metric}/conv3", 1 - v, step)
    writer.close()
    return folder


@pytest.fixture
def sweep(tmp_path):
    runs = tmp_path / "runs"
    ramp = np.arange(1, 11) / 10  # ten games, the returns grow linearly
    for seed, scale in ((1, 10.0), (2, 20.0)):
        _write_run(runs, "Breakout-v5", "hr", seed, scale * ramp, diagnostics={500: 0.1 * seed, 1000: 0.2 * seed})
        _write_run(runs, "Breakout-v5", "plain", seed, [1.0 + seed] * 10, hadamard=False, hidden_dim=1024,
                   diagnostics={500: 0.3, 1000: 0.4})  # fmt: skip
    _write_run(runs, "Pong-v5", "hr", 1, [-3.05] * 10)  # one seed
    _write_run(runs, "Pong-v5", "plain", 1, [-20.7] * 10, hadamard=False, hidden_dim=1024)
    _write_run(runs, "Pong-v5", "plain", 2, [-20.7] * 5, hadamard=False, hidden_dim=1024, status="running")
    _write_run(runs, "Adventure-v5", "hr", 1, [0.0] * 10, status=None)  # no human reference score, no status.json
    broken = runs / "Breakout-v5__hr__3__1700000000"  # corrupt events
    broken.mkdir()
    (broken / "args.json").write_text(json.dumps({"env_id": "Breakout-v5", "exp_name": "hr", "seed": 3}))
    (broken / "events.out.tfevents.1700000000.host").write_bytes(b"\x13" * 300)
    no_events = runs / "Breakout-v5__hr__4__1700000000"  # started, no events yet
    no_events.mkdir()
    (no_events / "args.json").write_text(json.dumps({"env_id": "Breakout-v5", "exp_name": "hr", "seed": 4}))
    (runs / "Breakout-v5__hr__5__1700000000").mkdir()  # nothing written yet
    return runs


def _read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_report_of_a_sweep(sweep, tmp_path, capsys):
    out_csv = tmp_path / "results.csv"
    assert cr.main([str(sweep), "--last-steps", "200", "--points", "10", "--csv", str(out_csv)]) == 0
    captured = capsys.readouterr()
    text = captured.out
    # Every run, the unfinished one marked; the old run without status.json cannot be said to have finished.
    assert (
        "| pong | plain (ppo, tanh, 1024) | Pong-v5__plain__2__1700000000 | NOT FINISHED (running) | 2 | 500 | -20.70 |"
        in text
    )
    assert (
        "| breakout | hr (ppo, tanh+hadamard, 512) | Breakout-v5__hr__1__1700000000 | finished | 1 | 1,000 | 9.50 |"
        in text
    )
    assert "| Adventure-v5__hr__1__1700000000 | NOT FINISHED (no status.json) |" in text
    # The first table, the score: hr's are 9.5 and 19 (the last two games, the last 200 steps), its areas 5.5 and 11;
    # every seed's score beside the mean, with two seeds their range.
    assert text.index("Score: the mean return of the games that ended in each run's last 200 steps") < text.index(
        "Runs"
    )
    assert "last 200 steps (mean over seeds [range: min, max] where n > 1)" in text
    assert (
        "| breakout | hr (ppo, tanh+hadamard, 512) | 2 seeds | 14.25 [9.50, 19.00] | 1: 9.50, 2: 19.00 | 8.25 [5.50, 11.00] |"
        in text
    )
    assert (
        "| breakout | plain (ppo, tanh, 1024) | 2 seeds | 2.50 [2.00, 3.00] | 1: 2.00, 2: 3.00 | 2.50 [2.00, 3.00] |"
        in text
    )
    assert (
        "| pong | hr (ppo, tanh+hadamard, 512) | 1 seed | -3.05 (n = 1 seed) | 1: -3.05 | -3.05 (n = 1 seed) |" in text
    )
    assert "| pong | plain (ppo, tanh, 1024) | 2 seeds, 1 unfinished | -20.70 [-20.70, -20.70] |" in text
    # srank is a count: no decimals, whatever its size; the effective rank keeps two
    assert "| breakout | hr (ppo, tanh+hadamard, 512) | 500 | 2 | 0.150 | 0.150 | 99 | 15.00 | 0.850 |" in text
    assert "| breakout | plain (ppo, tanh, 1024) | 1,000 | 2 | 0.400 | 0.400 | 264 | 40.00 | 0.600 |" in text
    cut = "cut: pong is compared up to step 500 (the step of its shortest run, "
    assert text.splitlines()[1].startswith(cut) and text.splitlines()[1].endswith(
        "plain (ppo, tanh, 1024) seed 1 (1,000)"
    )
    assert "no human reference score for adventure" in text
    assert "skipped" in captured.err and "__hr__3__" in captured.err and "__hr__4__" in captured.err
    assert "__hr__5__1700000000: no readable args.json" in captured.err

    rows = _read_csv(out_csv)
    by_key = {(r["table"], r["game"], r["exp_name"], r["metric"], r["step"]): r for r in rows}
    hns = [(9.5 - 1.7) / 28.8, (19 - 1.7) / 28.8]
    mean = by_key[("aggregate", "breakout+pong", "hr", "hns_mean", "")]
    assert float(mean["mean"]) == pytest.approx((np.mean(hns) + 0.5) / 2) and mean["seeds"] == "3"
    assert float(by_key[("aggregate", "breakout+pong", "hr", "hns_iqm", "")]["mean"]) == pytest.approx(
        np.mean(hns + [0.5])
    )
    assert float(by_key[("aggregate", "breakout+pong", "plain", "hns_median", "")]["mean"]) == pytest.approx(
        ((2 - 1.7) / 28.8 + (3 - 1.7) / 28.8) / 4  # pong's random score is normalised to 0
    )
    # Diagnostics of the representation, averaged over seeds at each capture step, the old tag included.
    dead = by_key[("diagnostics", "breakout", "hr", "dead_fraction", "500")]
    assert float(dead["mean"]) == pytest.approx(0.15) and float(dead["low"]) == pytest.approx(0.1)
    assert dead["interval"] == "range"
    assert float(by_key[("diagnostics", "breakout", "plain", "effective_rank", "1000")]["mean"]) == pytest.approx(40)
    # and the last convolution's dead channels, over the same seeds
    conv3 = by_key[("diagnostics", "breakout", "hr", "conv3_dead_fraction", "1000")]
    assert (float(conv3["mean"]), float(conv3["low"]), float(conv3["high"])) == pytest.approx((0.7, 0.6, 0.8))
    assert not any(r["table"] == "diagnostics" and r["game"] == "pong" for r in rows)
    per_run = [
        r for r in rows if r["table"] == "run" and r["game"] == "breakout" and r["metric"] == "score_last_200_steps"
    ]
    assert sorted(float(r["mean"]) for r in per_run) == [2.0, 3.0, 9.5, 19.0]
    assert {r["status"] for r in rows if r["table"] == "run" and r["game"] == "pong"} == {"finished", "running"}
    assert {r["algorithm"] for r in rows} == {"ppo"}
    assert all(len(r) == len(rows[0]) and None not in r.values() for r in rows)  # every row has every column


def test_read_run_takes_the_script_and_status_from_status_json(tmp_path):
    folder = _write_run(tmp_path, "Breakout-v5", "mine", 1, [1.0], status="interrupted", script="pqn_atari_hadamard.py")
    run = cr.read_run(str(folder))
    assert run.variant.algorithm == "pqn" and run.status == "interrupted"  # though args.json has PPO's gae_lambda
    assert run.game == "breakout" and run.seed == 1 and run.last_step == 100
    old = cr.read_run(str(_write_run(tmp_path, "Pong-v5", "mine", 1, [1.0], status=None)))
    assert old.variant.algorithm == "ppo" and old.status == "no status.json"  # guessed from gae_lambda


def test_plots(sweep, tmp_path, capsys, monkeypatch):
    from matplotlib.figure import Figure  # a requirement: the suite runs this test, never skips it

    titles = {}  # figure file -> its titles
    save = Figure.savefig

    def recording(fig, path, **kwargs):
        titles[os.path.basename(path)] = [fig.get_suptitle()] + [ax.get_title() for ax in fig.axes]
        save(fig, path, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording)
    figures = tmp_path / "figures"
    assert cr.main([str(sweep), "--plot", str(figures), "--bootstrap", "200"]) == 0
    names = sorted(os.listdir(figures))
    assert names == ["adventure_returns.png", "breakout_diagnostics.png", "breakout_returns.png", "pong_returns.png"]
    assert (figures / "breakout_returns.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a one-seed figure says so, and claims no interval
    assert titles["adventure_returns.png"][1] == "adventure: episodic return (n = 1 seed)"
    assert titles["breakout_returns.png"][1] == "breakout: episodic return (mean over seeds [range: min, max])"
    assert titles["pong_returns.png"][1] == "pong: episodic return (mean over seeds [range: min, max] where n > 1)"
    assert titles["breakout_diagnostics.png"][0] == "breakout: representation layer (mean over seeds [range: min, max])"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["missing_folder"], "missing_folder: no such folder"),
        ([".", "--last-episodes", "0"], "--last-episodes must be at least 1"),
        ([".", "--last-steps", "0"], "--last-steps must be at least 1"),
        ([".", "--bootstrap", "0"], "--bootstrap must be at least 1"),
        ([".", "--points", "0"], "--points must be at least 1"),
        ([".", "--steps", "0"], "--steps must be at least 1"),
        ([".", "--csv", "no/such/dir/out.csv"], "does not exist"),
    ],
)
def test_bad_arguments_stop_with_one_line(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert cr.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_no_runs_and_no_matplotlib(tmp_path, monkeypatch, capsys):
    assert cr.main([str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("error: no readable runs")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails as if it were not installed
    assert cr.main([str(tmp_path), "--plot", str(tmp_path / "figures")]) == 2
    assert capsys.readouterr().err == "error: --plot needs matplotlib (pip install matplotlib)\n"
    assert not (tmp_path / "figures").exists()


# ----------------------------------------------------------------------------------------------
# Variants: which runs are seeds of one experiment
# ----------------------------------------------------------------------------------------------
PPO_ARGS = {"repeat_action_probability": 0.0, "fire_on_life_loss": True, "learning_rate": 2.5e-4, "batch_size": 1024}


def test_runs_that_differ_in_a_game_setting_are_two_variants(tmp_path, capsys):
    runs = tmp_path / "runs"
    _write_run(runs, "Breakout-v5", "ppo_atari_hadamard", 1, [2.0], **PPO_ARGS)
    _write_run(runs, "Breakout-v5", "ppo_atari_hadamard", 1, [8.0], stamp=1700000001,
               **{**PPO_ARGS, "repeat_action_probability": 0.25})  # fmt: skip
    out_csv = tmp_path / "results.csv"
    assert cr.main([str(runs), "--csv", str(out_csv), "--bootstrap", "100"]) == 0
    scores = [r for r in _read_csv(out_csv) if r["table"] == "score" and r["metric"] == "score_last_100000_steps"]
    assert len(scores) == 2  # not two seeds of one setting
    assert len({r["variant"] for r in scores}) == 2
    assert [(r["seeds"], r["mean"]) for r in scores] == [("1", "2.0"), ("1", "8.0")]
    assert all(math.isnan(float(r["low"])) and math.isnan(float(r["high"])) and r["interval"] == "" for r in scores)
    text = capsys.readouterr().out
    assert "| breakout | ppo, tanh+hadamard, 512 | 1 seed | 2.00 (n = 1 seed) |" in text
    assert "| breakout | ppo, tanh+hadamard, 512, sticky 0.25 | 1 seed | 8.00 (n = 1 seed) |" in text


def test_seeds_of_one_setting_are_pooled_whatever_the_run_management_flags(tmp_path):
    runs = tmp_path / "runs"
    how = [  # how each seed was run: none of it makes another experiment
        {"save_model": False, "cuda": True, "checkpoint_interval": 0, "total_timesteps": 1000, "dormant_tau": 0.025},
        {"save_model": True, "cuda": False, "checkpoint_interval": 500, "total_timesteps": 2000, "dormant_tau": 0.1},
    ]
    for seed, (flags, batch_size) in enumerate(zip(how, (1024, 0)), start=1):  # PPO's batch_size: computed at run time
        _write_run(runs, "Breakout-v5", "ppo_atari_hadamard", seed, [2.0 * seed], diagnostics={100: 0.5},
                   **{**PPO_ARGS, **flags, "batch_size": batch_size})  # fmt: skip
    out = cr.compare([cr.read_run(str(folder)) for folder in sorted(runs.iterdir())], reps=100)
    (group,) = out.groups
    assert group.label == "ppo, tanh+hadamard, 512" and [run.seed for run in group.runs] == [1, 2]
    assert group.score == (3.0, 2.0, 4.0, "range")  # the two seeds' range
    # the thresholds of the diagnostics are no part of the experiment, but pooling runs measured apart is said
    assert any("dormant_tau 0.025, 0.1; its diagnostics pool them" in note for note in out.notes)
    # DQN's batch_size is a hyperparameter: another batch is another experiment
    dqn, ppo = {"script": "dqn_atari_hadamard.py"}, {"script": "ppo_atari_hadamard.py"}
    assert cr.variant_of({"batch_size": 32, "seed": 1}, dqn) != cr.variant_of({"batch_size": 64, "seed": 2}, dqn)
    assert cr.variant_of({"batch_size": 32, "seed": 1}, ppo) == cr.variant_of({"batch_size": 64, "seed": 2}, ppo)


def test_labels_say_what_sets_variants_apart_and_are_unique():
    ppo, pqn = {"script": "ppo_atari_hadamard.py"}, {"script": "pqn_atari_hadamard.py"}
    defaults = {"exp_name": "ppo_atari_hadamard", "activation": "tanh", "hadamard": True, "hidden_dim": 512, **PPO_ARGS}
    variants = {
        "default": cr.variant_of(defaults, ppo),
        "game": cr.variant_of({**defaults, "repeat_action_probability": 0.25, "fire_on_life_loss": False}, ppo),
        "learning rate": cr.variant_of({**defaults, "learning_rate": 0.001}, ppo),
        "named": cr.variant_of({**defaults, "exp_name": "ppo_tanh", "hadamard": False}, ppo),
        "old": cr.variant_of({k: v for k, v in defaults.items() if k != "repeat_action_probability"}, ppo),
        "pqn": cr.variant_of({**defaults, "exp_name": "pqn_tanh", "learning_rate": 0.5}, pqn),
    }
    labels = cr.variant_labels(variants.values())
    assert {name: labels[v] for name, v in variants.items()} == {
        "default": "ppo, tanh+hadamard, 512, learning_rate 0.00025",
        "game": "ppo, tanh+hadamard, 512, no fire on life loss, sticky 0.25, learning_rate 0.00025",
        "learning rate": "ppo, tanh+hadamard, 512, learning_rate 0.001",
        "named": "ppo_tanh (ppo, tanh, 512, learning_rate 0.00025)",
        "old": "ppo, tanh+hadamard, 512, sticky n/a, learning_rate 0.00025",  # from before the option existed
        "pqn": "pqn_tanh (pqn, tanh+hadamard, 512)",  # PPO's settings are not PQN's business
    }
    assert list(labels.values()) == sorted(labels.values())
    # values that differ but read alike are numbered rather than merged
    alike = [cr.variant_of({**defaults, "learning_rate": value}, ppo) for value in (0.001, "0.001")]
    assert sorted(cr.variant_labels(alike).values()) == [
        "ppo, tanh+hadamard, 512, learning_rate 0.001 #1",
        "ppo, tanh+hadamard, 512, learning_rate 0.001 #2",
    ]


def _record_figures(monkeypatch):
    """figure file -> {line label: colour} of its plots, whether any plot has its own legend, the figure's legends
    and savefig's bbox_inches; and -> {plot title: (y limits, y values of its lines)}."""
    from matplotlib.figure import Figure

    lines, axes, save = {}, {}, Figure.savefig

    def recording(fig, path, **kwargs):
        name = os.path.basename(path)
        lines[name] = {line.get_label(): line.get_color() for ax in fig.axes for line in ax.get_lines()}
        own = any(ax.get_legend() is not None for ax in fig.axes)
        lines[name] = lines[name], own, len(fig.legends), kwargs.get("bbox_inches")
        axes[name] = {ax.get_title(): (ax.get_ylim(), [line.get_ydata() for line in ax.get_lines()]) for ax in fig.axes}
        save(fig, path, **kwargs)

    monkeypatch.setattr(Figure, "savefig", recording)
    return lines, axes


def test_a_variant_keeps_its_colour_in_every_figure(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    for seed in (1, 2):
        _write_run(runs, "Breakout-v5", "hr", seed, [1.0, 2.0], diagnostics={100: 0.1})
        _write_run(runs, "Breakout-v5", "plain", seed, [1.0, 3.0], hadamard=False, diagnostics={100: 0.2})
    _write_run(runs, "Pong-v5", "plain", 1, [-20.0, -19.0], hadamard=False)  # the second variant alone
    lines, _ = _record_figures(monkeypatch)
    assert cr.main([str(runs), "--plot", str(tmp_path / "figures"), "--bootstrap", "100"]) == 0
    colours = {}  # variant -> its colours in all figures
    for name, (labelled, own_legend, figure_legends, bbox) in lines.items():
        assert not own_legend and figure_legends == 1 and bbox == "tight"  # the legend outside the plots, kept
        for label, colour in labelled.items():
            colours.setdefault(label.rsplit(", ", 1)[0], set()).add(colour)
    assert sorted(lines) == ["breakout_diagnostics.png", "breakout_returns.png", "pong_returns.png"]
    assert sorted(colours) == ["hr (ppo, tanh+hadamard, 512)", "plain (ppo, tanh, 512)"]
    assert all(len(c) == 1 for c in colours.values())  # one colour per variant in every figure
    assert len(set.union(*colours.values())) == 2  # and two variants two colours


def test_a_metric_at_zero_is_a_flat_line_at_zero(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    _write_run(runs, "Breakout-v5", "hr", 1, [0.0] * 4, diagnostics={100: 0.0, 200: 0.0, 300: 0.0})
    _, axes = _record_figures(monkeypatch)
    assert cr.main([str(runs), "--plot", str(tmp_path / "figures"), "--bootstrap", "100"]) == 0
    for title, floor in (("dead fraction", 1e-3), ("dormant fraction", 1e-3), ("srank", 1.0)):
        (bottom, top), ys = axes["breakout_diagnostics.png"][title]
        assert all((y == 0).all() for y in ys)
        assert top == pytest.approx(1.1 * floor) and -0.05 * top < bottom < 0  # 0 just above the axis, no -0.04
    (bottom, top), ys = axes["breakout_returns.png"]["breakout: episodic return (n = 1 seed)"]
    assert (bottom, top) == (-1.0, 1.0) and (ys[0][~np.isnan(ys[0])] == 0).all()  # NaN before the first game


def test_the_score_over_the_last_steps(sweep, tmp_path, capsys):
    steps, returns = [10, 20, 60, 90, 130], [1.0, 3.0, 5.0, 7.0, 100.0]
    assert cr.last_steps_score(steps, returns, horizon=100, last_steps=50) == 6.0  # games at 60 and 90
    assert cr.last_steps_score(steps, returns, horizon=100, last_steps=40) == 7.0  # (60, 100]: 60 is out
    assert cr.last_steps_score(steps, returns, horizon=1000, last_steps=1000) == 23.2  # every game
    assert math.isnan(cr.last_steps_score(steps, returns, horizon=100, last_steps=5))
    # Breakout is compared up to step 1,000: the games at 800, 900 and 1,000 score 8, 9, 10 and 16, 18, 20 in hr's
    # two runs, their means 9 and 18.
    out_csv = tmp_path / "results.csv"
    assert cr.main([str(sweep), "--last-episodes", "2", "--last-steps", "250", "--csv", str(out_csv)]) == 0
    text = capsys.readouterr().out
    header = "| game | variant | runs | score (last 250 steps) | by seed (seed: score) | last 2 games | area under the curve |"
    assert header in text
    row = "| breakout | hr (ppo, tanh+hadamard, 512) | 2 seeds | 13.50 [9.00, 18.00] | 1: 9.00, 2: 18.00 | 14.25 [9.50, 19.00] |"
    assert row in text
    assert "| Breakout-v5__hr__2__1700000000 | finished | 2 | 1,000 | 18.00 | 19.00 |" in text
    assert "Human-normalised scores across games" in text  # of the headline score
    rows = _read_csv(out_csv)
    by_key = {(r["table"], r["game"], r["exp_name"], r["metric"], r["seed"]): r for r in rows}
    score = by_key[("score", "breakout", "hr", "score_last_250_steps", "")]
    assert (float(score["mean"]), float(score["low"]), float(score["high"]), score["seeds"]) == (13.5, 9, 18, "2")
    assert float(by_key[("run", "breakout", "hr", "score_last_250_steps", "2")]["mean"]) == 18.0
    assert float(by_key[("score", "breakout", "hr", "score_last_2_games", "")]["mean"]) == 14.25
    hns = float(by_key[("run", "breakout", "hr", "human_normalized", "2")]["mean"])
    assert hns == pytest.approx(cr.human_normalized(18.0, "breakout"))  # of the headline score
    # every number of the runs table: the seed and the step each run reached too
    assert float(by_key[("run", "pong", "plain", "last_step", "2")]["mean"]) == 500
    # a run with no game in the last steps is left out of that score, with a note
    out = cr.compare([_run("breakout", 1, "a", 1000, [(400, 2.0)])], last_episodes=1, reps=100, last_steps=100)
    assert math.isnan(out.groups[0].score[0]) and out.groups[0].last_games_score[0] == 2.0
    assert (
        "runs/breakout_a_1: no game ended in the last 100 steps up to step 1,000; left out of the scores" in out.notes
    )


def test_the_csv_holds_the_learning_curves_the_figures_draw(sweep, tmp_path, capsys):
    """Breakout's hr runs: ten games each at steps 100, ..., 1,000 with returns 1..10 and 2..20; with 10 windows of
    the 1,000 steps each window holds one game, so the curve is the mean of the two seeds' games: 1.5 i."""
    out_csv = tmp_path / "results.csv"
    comparison = cr.compare([cr.read_run(str(f)) for f in sorted(sweep.glob("Breakout-v5__hr__[12]_*"))], points=10)
    cr.write_csv(comparison, str(out_csv))
    curve = [r for r in _read_csv(out_csv) if r["table"] == "curve"]
    assert [float(r["step"]) for r in curve] == [100.0 * i for i in range(1, 11)]
    assert [float(r["mean"]) for r in curve] == pytest.approx([1.5 * i for i in range(1, 11)])
    assert all(r["seeds"] == "2" and float(r["low"]) <= float(r["mean"]) <= float(r["high"]) for r in curve)


# ----------------------------------------------------------------------------------------------
# Published runs: records that read as their run folders
# ----------------------------------------------------------------------------------------------
def _same_run(a: cr.Run, b: cr.Run) -> None:
    """Every field of two Runs equal but the path: the numbers exactly, the arrays of the same dtype."""
    for field in cr.Run._fields[1:]:
        x, y = getattr(a, field), getattr(b, field)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y), field
        elif field == "diagnostics":
            assert x.keys() == y.keys(), field
            for metric in x:
                assert all(np.array_equal(u, v) and u.dtype == v.dtype for u, v in zip(x[metric], y[metric])), metric
        else:
            assert x == y, field


def test_a_published_record_reads_as_its_run_folder(tmp_path):
    folder = _write_run(tmp_path / "runs", "Breakout-v5", "mine", 2, [1.0, 3.5, 2.0, 0.1], diagnostics={100: 0.125,
                        400: 0.3}, evaluation=[4.0, 6.0], stamp=1700000002)  # fmt: skip
    published = tmp_path / "published"
    path = cr.publish(str(folder), str(published))
    assert path == str(published / f"{folder.name}.json") and os.listdir(published) == [f"{folder.name}.json"]
    from_folder, from_record = cr.read_run(str(folder)), cr.read_run(path)
    _same_run(from_folder, from_record)
    assert from_record.episode_lengths.tolist() == [10, 20, 30, 40] and from_record.evaluation_returns.tolist() == [
        4,
        6,
    ]
    assert from_record.diagnostics["dead_fraction"][1].tolist() == [0.125, 0.30000001192092896]  # float32, as logged
    with open(path) as f:
        record = json.load(f)
    assert (record["format"], record["version"]) == (cr.RECORD_FORMAT, cr.RECORD_VERSION)
    assert record["status"] == {
        "script": "ppo_atari_hadamard.py",
        "status": "finished",
        "updated": "2025-01-01 12:00:00",
    }
    assert record["episodes"] == {"step": [100, 200, 300, 400], "return": [1.0, 3.5, 2.0, 0.10000000149011612],
                                  "length": [10, 20, 30, 40]}  # fmt: skip
    assert record["evaluation"] == {"game": [0, 1], "return": [4.0, 6.0]}
    # every layer's captures, not only the representation's
    assert record["diagnostics"]["srank/conv1"] == {"step": [100, 400], "value": [0.8999999761581421] * 2}
    assert len(record["diagnostics"]) == 4 * len(cr.DIAGNOSTIC_METRICS)
    # the same report from either, the run named alike
    reports = [cr.tables(cr.compare([run], points=4, reps=100)) for run in (from_folder, from_record)]
    assert reports[0] == reports[1] and f"| {folder.name} | finished |" in reports[0]


def test_a_record_is_written_whole_and_never_rewritten(tmp_path, monkeypatch, capsys):
    runs, published = tmp_path / "runs", tmp_path / "published"
    folder = _write_run(runs, "Breakout-v5", "mine", 1, [1.0, 2.0])
    path = cr.publish(str(folder), str(published))
    before = (os.stat(path).st_ino, os.stat(path).st_mtime_ns, open(path).read())
    assert cr.publish(str(folder), str(published)) == path  # the same record again: nothing written
    assert (os.stat(path).st_ino, os.stat(path).st_mtime_ns, open(path).read()) == before
    # the run changed (a game more): its record stays as it was
    writer_folder = _write_run(tmp_path / "other", "Breakout-v5", "mine", 1, [1.0, 2.0, 5.0])
    os.rename(writer_folder, runs / "changed")
    os.rename(folder, tmp_path / "kept")
    os.rename(runs / "changed", folder)
    with pytest.raises(ValueError, match="exists with other content; a published record is never rewritten"):
        cr.publish(str(folder), str(published))
    assert open(path).read() == before[2] and os.listdir(published) == [os.path.basename(path)]
    # runs that are not finished, or cannot be read, are refused with one line
    running = _write_run(runs, "Breakout-v5", "mine", 2, [1.0], status="running")
    with pytest.raises(ValueError, match=r"not finished \(running\); only finished runs are published"):
        cr.publish(str(running), str(published))
    (runs / "empty").mkdir()
    for bad, why in ((runs / "empty", "no readable args.json"), (runs / "nowhere", "no such run folder")):
        with pytest.raises(ValueError, match=why) as raised:
            cr.publish(str(bad), str(published))
        assert "\n" not in str(raised.value)
    assert os.listdir(published) == [os.path.basename(path)]
    # a write that fails leaves neither the record nor a temporary file
    fresh = _write_run(runs, "Breakout-v5", "mine", 3, [1.0])

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cr.os, "fsync", full_disk)
    with pytest.raises(OSError):
        cr.publish(str(fresh), str(published))
    assert os.listdir(published) == [os.path.basename(path)]
    monkeypatch.undo()
    # the command line: one line per run, exit status 1 when one was refused
    assert cr.main(["--publish", str(published), str(fresh), str(running)]) == 1
    out, err = capsys.readouterr()
    assert out == f"published {published / fresh.name}.json\n"
    assert err == f"error: {running}: not finished (running); only finished runs are published\n"
    assert cr.main(["--publish", str(published), str(fresh)]) == 0 and len(os.listdir(published)) == 2


def _record(tmp_path) -> dict:
    folder = _write_run(tmp_path / "source", "Breakout-v5", "mine", 1, [1.0, 2.0], diagnostics={100: 0.5})
    with open(cr.publish(str(folder), str(tmp_path / "source_records"))) as f:
        return json.load(f)


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda r: "{not json", "not JSON"),
        (lambda r: [1, 2], "not a run record"),
        (lambda r: {**r, "format": "some other tool's"}, "not a run record"),
        (lambda r: {k: v for k, v in r.items() if k != "format"}, "not a run record"),
        (lambda r: {**r, "version": 2}, "a record of version 2, newer than this compare_runs.py reads (1)"),
        (lambda r: {**r, "version": "1"}, "version '1' is not a record version"),
        (lambda r: {k: v for k, v in r.items() if k != "episodes"}, "no episodes"),
        (lambda r: {**r, "args": {"seed": 1}}, "args is not an object with an env_id"),
        (lambda r: {**r, "last_step": "400"}, "last_step not a whole number"),
        (lambda r: {**r, "episodes": {**r["episodes"], "return": [1.0, "2"]}}, "episodes.return is not a list of"),
        (lambda r: {**r, "episodes": {**r["episodes"], "step": [100.5, 200]}}, "episodes.step is not a list of"),
        (lambda r: {**r, "episodes": {**r["episodes"], "length": [10]}}, "episodes: its lists differ in length"),
        (lambda r: {**r, "diagnostics": {"srank/conv1": [1, 2]}}, "diagnostics.srank/conv1 is not an object"),
        (lambda r: {**r, "diagnostics": {"srank/x": {"step": [1], "value": []}}}, "srank/x: its lists differ"),
        (lambda r: {**r, "evaluation": None}, "evaluation.game is not a list of numbers"),
    ],
)
def test_a_damaged_or_foreign_record_is_one_line_and_exit_1(damage, why, tmp_path, capsys):
    record = _record(tmp_path)
    published = tmp_path / "published"
    published.mkdir()
    good = published / "good.json"
    good.write_text(json.dumps(record))
    bad = published / "bad.json"
    damaged = damage(record)
    bad.write_text(damaged if isinstance(damaged, str) else json.dumps(damaged))
    for argv in ([str(bad)], [str(published)]):  # the file itself, or the folder that holds it beside a good one
        assert cr.main(argv) == 1
        out, err = capsys.readouterr()
        assert out == "" and err.startswith(f"error: {bad}: ") and why in err and err.count("\n") == 1, err
    assert cr.main([str(good)]) == 0  # the good one alone reads


def test_a_damaged_record_has_no_traceback_in_a_subprocess(tmp_path):
    import subprocess

    bad = tmp_path / "truncated.json"
    bad.write_text(json.dumps(_record(tmp_path))[:-40])
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "compare_runs.py")
    done = subprocess.run([sys.executable, script, str(bad)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith(f"error: {bad}: not JSON (") and done.stderr.count("\n") == 1


def test_a_run_folder_beside_published_records_kept_apart_when_its_settings_differ(tmp_path, capsys):
    """The published seeds and a user's runs in one command: a run of the same settings is one more seed of theirs,
    one with a new option (a third Hadamard branch) a variant of its own, labelled by the option."""
    published = tmp_path / "docs" / "results" / "runs"
    for seed in (1, 2, 3):
        folder = _write_run(tmp_path / "grid", "Breakout-v5", "pqn_tanh_hadamard", seed, [2.0 * seed] * 4)
        cr.publish(str(folder), str(published))
    same = _write_run(tmp_path / "runs", "Breakout-v5", "pqn_tanh_hadamard", 4, [10.0] * 4)
    three = _write_run(tmp_path / "runs", "Breakout-v5", "pqn_tanh_hadamard", 1, [7.0] * 4, hadamard_branches=3)
    assert cr.main([str(same), str(three), str(published), "--bootstrap", "100"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("5 runs\n\nScore: ")  # the same horizon: nothing cut
    assert "| pqn_tanh_hadamard (ppo, tanh+hadamard, 512, hadamard_branches 3) | 1 seed | 7.00 (n = 1 seed) |" in text
    row = "| pqn_tanh_hadamard (ppo, tanh+hadamard, 512, hadamard_branches n/a) | 4 seeds | 5.50 [2.00, 10.00] |"
    assert row + " 1: 2.00, 2: 4.00, 3: 6.00, 4: 10.00 |" in text
    assert f"| {same.name} | finished | 4 |" in text and f"| {three.name} | finished | 1 |" in text
    assert "| Breakout-v5__pqn_tanh_hadamard__3__1700000000 | finished | 3 |" in text  # a record, named as its run


def test_runs_of_other_lengths_are_cut_or_left_out_in_the_first_lines(tmp_path, capsys):
    """A 5,000-step DQN run beside three 45,000-step PQN runs: the short run is left out, not the others cut to its
    step; a user's run a little longer than the published ones is cut to theirs; both said first."""
    runs = tmp_path / "runs"
    _write_run(runs, "Breakout-v5", "dqn_atari_hadamard", 1, [1.0] * 5, game_steps=1000, script="dqn_atari_hadamard.py")
    for seed in (1, 2, 3):
        _write_run(runs, "Breakout-v5", "pqn_atari_hadamard", seed, [float(seed)] * 45, game_steps=1000,
                   script="pqn_atari_hadamard.py")  # fmt: skip
    _write_run(
        runs, "Breakout-v5", "pqn_atari_hadamard", 4, [9.0] * 46, game_steps=1000, script="pqn_atari_hadamard.py"
    )
    assert cr.main([str(runs), "--bootstrap", "100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    dqn = runs / "Breakout-v5__dqn_atari_hadamard__1__1700000000"
    assert lines[:3] == [
        "5 runs",
        f"left out: {dqn}: it reached step 5,000, less than half the median step of breakout's runs, 45,000 "
        "(--steps 5000 keeps it)",
        "cut: breakout is compared up to step 45,000 (the step of its shortest run, "
        f"{runs / 'Breakout-v5__pqn_atari_hadamard__1__1700000000'}); cut there: pqn, tanh+hadamard, 512 seed 4 (46,000)",
    ]
    # the score over the last 100,000 steps, up to step 45,000: the fourth run's game at 46,000 is past it
    row = "| breakout | pqn, tanh+hadamard, 512 | 4 seeds | 3.75 [1.00, 9.00] | 1: 1.00, 2: 2.00, 3: 3.00, 4: 9.00 |"
    assert any(line.startswith(row) for line in lines)
    # --steps: every run up to there
    assert cr.main([str(runs), "--steps", "5000", "--bootstrap", "100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == (
        "cut: breakout is compared up to step 5,000 (--steps); cut there: "
        "pqn, tanh+hadamard, 512 seed 1 (45,000), 2 (45,000), 3 (45,000), 4 (46,000)"
    )
    # one long run does not leave out the others either: the median decides, and three short runs cut the long one
    short = tmp_path / "short"
    for seed in (2, 3):
        _write_run(short, "Breakout-v5", "dqn_atari_hadamard", seed, [1.0] * 5, game_steps=1000,
                   script="dqn_atari_hadamard.py")  # fmt: skip
    pqn = runs / "Breakout-v5__pqn_atari_hadamard__1__1700000000"
    assert cr.main([str(dqn), str(short), str(pqn), "--bootstrap", "100"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == [
        "4 runs",
        f"cut: breakout is compared up to step 5,000 (the step of its shortest run, {dqn}); cut there: "
        "pqn, tanh+hadamard, 512 seed 1 (45,000)",
    ]


def test_intervals_are_ranges_below_the_seeds_a_ci_needs():
    assert cr.estimate([3.0, 1.0, 2.0]) == (2.0, 1.0, 3.0, "range")
    assert cr.estimate([5.0]) == pytest.approx((5.0, math.nan, math.nan, ""), nan_ok=True)
    values = np.arange(cr.MIN_SEEDS_FOR_CI, dtype=float)
    mean, low, high, interval = cr.estimate(values, reps=2000)
    assert interval == "95% bootstrap CI" and values.min() < low < mean < high < values.max()
    assert (low, high) == cr.mean_ci(values, 2000)[1:]
    assert cr.interval_of(cr.MIN_SEEDS_FOR_CI - 1) == "range" and cr.MIN_SEEDS_FOR_CI == 20  # docs/comparing.md's


# ----------------------------------------------------------------------------------------------
# One labelling rule: compare_runs.py and diagnostics.py
# ----------------------------------------------------------------------------------------------
def test_a_new_option_shows_in_both_labels(tmp_path, capsys):
    """A student's new Args field (hadamard_branches, 2 by default, 3 in their run): compare_runs.py and diagnostics.py
    label the runs by one rule, so the option shows in both, beside a run that set it to 2 and one from before it."""
    import diagnostics

    runs = tmp_path / "runs"
    folders = {
        "old": _write_run(runs, "Breakout-v5", "pqn_atari_hadamard", 1, [1.0], script="pqn_atari_hadamard.py"),
        "two": _write_run(
            runs, "Breakout-v5", "pqn_atari_hadamard", 2, [1.0], script="pqn_atari_hadamard.py", hadamard_branches=2
        ),  # fmt: skip
        "three": _write_run(
            runs, "Breakout-v5", "pqn_atari_hadamard", 3, [1.0], script="pqn_atari_hadamard.py", hadamard_branches=3
        ),  # fmt: skip
    }
    rng = np.random.default_rng(0)
    for folder in folders.values():
        activations = {"conv1": rng.normal(size=(64, 8)), "representation": rng.normal(size=(64, 16))}
        diagnostics.log_diagnostics(
            None, 100, activations, hidden_activation="tanh", save_dir=str(folder / "activations")
        )
    expected = {
        "old": "pqn, tanh+hadamard, 512, hadamard_branches n/a",
        "two": "pqn, tanh+hadamard, 512, hadamard_branches 2",
        "three": "pqn, tanh+hadamard, 512, hadamard_branches 3",
    }
    out = cr.compare([cr.read_run(str(folder)) for folder in folders.values()], reps=100)
    assert {run.path: g.label for g in out.groups for run in g.runs} == {str(folders[n]): expected[n] for n in folders}
    assert diagnostics.main([str(folder) for folder in folders.values()]) == 0
    legend = capsys.readouterr().out.split("\n\n")[0].splitlines()
    seeds = {"old": 1, "two": 2, "three": 3}
    assert legend == [f"run {i}: {folders[n].name}, {expected[n]}, seed {seeds[n]}" for i, n in enumerate(folders, 1)]
    # the same two runs alone: only what sets them apart
    assert diagnostics.main([str(folders["two"]), str(folders["three"])]) == 0
    legend = capsys.readouterr().out.split("\n\n")[0].splitlines()
    assert [line.split(", ", 1)[1] for line in legend] == [f"{expected['two']}, seed 2", f"{expected['three']}, seed 3"]
