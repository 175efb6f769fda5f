"""Each algorithm's results page (docs/results/<algorithm>.md) against the CSV committed beside it: every number of the
page's tables is the CSV's, as rounded on the page, and the CSV holds the grid's runs that the page reports (4
variants x 3 seeds once a grid is done), finished."""

import csv
import math
import os
import re
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO_ROOT, "docs", "results")
VARIANTS = {  # the pages' names of the grid's representations
    "tanh + Hadamard (the paper's method)": "tanh_hadamard",
    "plain tanh, 512": "tanh",
    "parameter-matched tanh, 1,024": "tanh_1024",
}
OWN_NETWORK = {
    "dqn": "ReLU, 512 (CleanRL's network)",
    "pqn": "ReLU, 512 (PQN's own network)",
    "ppo": "ReLU, 512 (CleanRL's network)",
}
LAST_STEP = {"dqn": 400_000, "pqn": 397_312, "ppo": 399_360}  # PPO and PQN: a run ends at its last whole rollout
SEEDS = {"dqn": ("1", "2", "3"), "pqn": ("1", "2", "3"), "ppo": ("1", "2", "3")}  # the seeds each page reports
PARTIAL: dict[str, tuple[str, ...]] = {}  # a grid still running: the representations its page reports so far
PUBLISHED = {"dqn", "ppo", "pqn"}  # the algorithms whose CSV is rebuilt from the records in docs/results/runs
ALGORITHMS = sorted(OWN_NETWORK)
DIAGNOSTICS = {
    "dead fraction": ("dead_fraction", ".4f"),
    "srank": ("srank", ".0f"),
    "effective rank": ("effective_rank", ".1f"),
}
TRUNK = {"conv3 dead fraction": ("conv3_dead_fraction", ".4f")}  # a table a page may add (the last convolution)


def variants(algorithm: str) -> dict[str, str]:
    """The page's name of each variant it reports -> its experiment name."""
    names = {**VARIANTS, OWN_NETWORK[algorithm]: "relu"}
    reported = PARTIAL.get(algorithm, names.values())
    return {
        name: f"{algorithm}_{representation}" for name, representation in names.items() if representation in reported
    }


@pytest.fixture(scope="module", params=ALGORITHMS)
def page_and_rows(request):
    with open(os.path.join(RESULTS, f"{request.param}.md"), encoding="utf-8") as f:
        page = f.read()
    with open(os.path.join(RESULTS, request.param, "results.csv"), newline="") as f:
        return request.param, page, list(csv.DictReader(f))


def tables(page: str) -> list[list[list[str]]]:
    """The page's Markdown tables, each a list of rows of cells (header first, the separator left out)."""
    found, current = [], []
    for line in page.splitlines() + [""]:
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if not all(set(cell) <= set("-: ") for cell in cells):
                current.append(cells)
        elif current:
            found.append(current)
            current = []
    return found


def estimate(row: dict, spec: str) -> str:
    """The mean as the page writes it: with its range (or interval) in brackets, alone for one seed."""
    low, high = (float(row[name]) for name in (("low", "high") if "low" in row else ("ci_low", "ci_high")))
    if math.isnan(low):
        return f"{float(row['mean']):{spec}}"
    return f"{float(row['mean']):{spec}} [{low:{spec}}, {high:{spec}}]"


def test_the_csv_holds_the_whole_grid(page_and_rows):
    algorithm, _, rows = page_and_rows
    runs = {(r["exp_name"], r["seed"], r["status"]) for r in rows if r["table"] == "run"}
    assert runs == {(e, s, "finished") for e in variants(algorithm).values() for s in SEEDS[algorithm]}
    last_steps = {float(r["mean"]) for r in rows if r["table"] == "run" and r["metric"] == "last_step"}
    assert last_steps == {LAST_STEP[algorithm]}


def test_every_number_of_the_pages_tables_is_the_csvs(page_and_rows):
    algorithm, page, rows = page_and_rows
    names = variants(algorithm)

    def one(table, exp_name, metric, step=None):
        (row,) = [r for r in rows if (r["table"], r["exp_name"], r["metric"]) == (table, exp_name, metric)
                  and (step is None or float(r["step"]) == step)]  # fmt: skip
        return row

    checked, trunk_tables = 0, 0
    for table in tables(page):
        header, body = table[0], table[1:]
        if header[0] == "variant" and header[-1].startswith("area under the curve"):  # the scores
            seeds = [cell.split()[-1] for cell in header if cell.startswith("seed ")]
            assert seeds == list(SEEDS[algorithm]), header
            for cells in body:
                exp_name = names[cells[0]]
                for seed, cell in zip(seeds, cells[1:]):
                    (run,) = [r for r in rows if (r["table"], r["exp_name"], r["seed"], r["metric"])
                              == ("run", exp_name, seed, "score_last_100000_steps")]  # fmt: skip
                    assert cell == f"{float(run['mean']):.2f}", (cells[0], seed)
                if len(seeds) > 1:  # one seed: its score is the mean, not written twice
                    assert cells[-2] == estimate(one("score", exp_name, "score_last_100000_steps"), ".2f"), cells[0]
                assert cells[-1] == estimate(one("score", exp_name, "auc"), ".2f"), cells[0]
                checked += 1
        elif header[0] in DIAGNOSTICS or header[0] in TRUNK:
            metric, spec = {**DIAGNOSTICS, **TRUNK}[header[0]]
            trunk_tables += header[0] in TRUNK
            steps = [float(cell.split()[-1].replace(",", "")) for cell in header[1:]]
            for cells in body:
                for step, cell in zip(steps, cells[1:]):
                    assert cell == estimate(one("diagnostics", names[cells[0]], metric, step), spec), (
                        cells[0],
                        step,
                    )
                checked += 1
    assert checked == len(names) * (1 + len(DIAGNOSTICS) + trunk_tables)  # every variant in every table


def test_the_verdicts_quote_the_tables(page_and_rows):
    """Each number in the three claims' verdicts stands in one of the page's tables (or is a difference of two)."""
    _, page, _ = page_and_rows
    claims = page[page.index("## The three claims") : page.index("## What this does not show")]
    in_tables = {
        cell for table in tables(page) for row in table for cell in re.findall(r"-?\d[\d,]*\.?\d*", " ".join(row))
    }
    quoted = re.findall(r"-?\d[\d,]*\.\d+", claims)
    assert quoted and all(number in in_tables for number in quoted), [n for n in quoted if n not in in_tables]


@pytest.mark.parametrize("algorithm", sorted(PUBLISHED))
def test_the_committed_csv_is_what_the_published_records_give(algorithm, tmp_path):
    """The grid's report over docs/results/runs alone, without training again, writes the committed CSV."""
    script = os.path.join(REPO_ROOT, "benchmarks", "representation_grid.py")
    command = [sys.executable, script, algorithm, str(tmp_path / "grid"), "--report-only"]
    command += ["--published", os.path.join(RESULTS, "runs"), "--out", str(tmp_path / "report")]
    command += ["--seeds", *SEEDS[algorithm]]  # the seeds the page reports (more may be published)
    command += ["--representations", *PARTIAL.get(algorithm, ["tanh_hadamard", "tanh", "tanh_1024", "relu"])]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    with open(os.path.join(RESULTS, algorithm, "results.csv")) as committed:
        assert (tmp_path / "report" / "results.csv").read_text() == committed.read(), (
            f"docs/results/{algorithm}/results.csv is not what docs/results/runs gives: rebuild it with {command[1:3]}"
        )
