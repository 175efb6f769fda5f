"""docs/results.md against the CSV committed beside it: every number of the page's tables is the CSV's, as rounded on
the page, and the CSV holds the whole grid (4 variants x 3 seeds, finished)."""

import csv
import os
import re

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.path.join(REPO_ROOT, "docs", "results.md")
CSV = os.path.join(REPO_ROOT, "docs", "results", "results.csv")
VARIANTS = {  # the page's names of the grid's experiments
    "tanh + Hadamard (the paper's method)": "pqn_tanh_hadamard",
    "plain tanh, 512": "pqn_tanh",
    "parameter-matched tanh, 1,024": "pqn_tanh_1024",
    "ReLU, 512 (PQN's own network)": "pqn_relu",
}
DIAGNOSTICS = {
    "dead fraction": ("dead_fraction", ".4f"),
    "srank": ("srank", ".0f"),
    "effective rank": ("effective_rank", ".1f"),
}


@pytest.fixture(scope="module")
def page_and_rows():
    with open(PAGE, encoding="utf-8") as f:
        page = f.read()
    with open(CSV, newline="") as f:
        return page, list(csv.DictReader(f))


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
    return f"{float(row['mean']):{spec}} [{float(row['ci_low']):{spec}}, {float(row['ci_high']):{spec}}]"


def test_the_csv_holds_the_whole_grid(page_and_rows):
    _, rows = page_and_rows
    runs = {(r["exp_name"], r["seed"], r["status"]) for r in rows if r["table"] == "run"}
    assert runs == {(e, s, "finished") for e in VARIANTS.values() for s in ("1", "2", "3")}
    assert {float(r["mean"]) for r in rows if r["table"] == "run" and r["metric"] == "last_step"} == {397_312}


def test_every_number_of_the_pages_tables_is_the_csvs(page_and_rows):
    page, rows = page_and_rows

    def one(table, exp_name, metric, step=None):
        (row,) = [r for r in rows if (r["table"], r["exp_name"], r["metric"]) == (table, exp_name, metric)
                  and (step is None or float(r["step"]) == step)]  # fmt: skip
        return row

    checked = 0
    for table in tables(page):
        header, body = table[0], table[1:]
        if header[0] == "variant" and header[-1].startswith("area under the curve"):  # the scores
            seeds = [cell.split()[-1] for cell in header[1:-2]]
            for cells in body:
                exp_name = VARIANTS[cells[0]]
                for seed, cell in zip(seeds, cells[1:-2]):
                    (run,) = [r for r in rows if (r["table"], r["exp_name"], r["seed"], r["metric"])
                              == ("run", exp_name, seed, "score_last_100000_steps")]  # fmt: skip
                    assert cell == f"{float(run['mean']):.2f}", (cells[0], seed)
                assert cells[-2] == estimate(one("score", exp_name, "score_last_100000_steps"), ".2f"), cells[0]
                assert cells[-1] == estimate(one("score", exp_name, "auc"), ".2f"), cells[0]
                checked += 1
        elif header[0] in DIAGNOSTICS:
            metric, spec = DIAGNOSTICS[header[0]]
            steps = [float(cell.split()[-1].replace(",", "")) for cell in header[1:]]
            for cells in body:
                for step, cell in zip(steps, cells[1:]):
                    assert cell == estimate(one("diagnostics", VARIANTS[cells[0]], metric, step), spec), (
                        cells[0],
                        step,
                    )
                checked += 1
    assert checked == 4 * (1 + len(DIAGNOSTICS))  # every variant in every table


def test_the_verdicts_quote_the_tables(page_and_rows):
    """Each number in the three claims' verdicts stands in one of the page's tables (or is a difference of two)."""
    page, _ = page_and_rows
    claims = page[page.index("## The three claims") : page.index("## What this does not show")]
    in_tables = {
        cell for table in tables(page) for row in table for cell in re.findall(r"-?\d[\d,]*\.?\d*", " ".join(row))
    }
    quoted = re.findall(r"-?\d[\d,]*\.\d+", claims)
    assert quoted and all(number in in_tables for number in quoted), [n for n in quoted if n not in in_tables]
