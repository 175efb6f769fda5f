"""Every command line that README.md and docs/*.md show is one the scripts accept, and every link between them leads
somewhere.

The commands are the lines of the documents' shell code blocks (```bash, ```sh, ```shell or a bare ```) that run
`python <script>.py` for one of the three scripts, diagnostics.py or compare_runs.py. A line ending in a backslash
continues on the next. What a shell would do first is done here: shell variables set in the same block
(`keep="..."`, `for seed in 1 2; do`) take their (first) value, and whatever stands before `python` (`VAR=value`,
`nice -n 5`, `echo "`) or after the command (`&`, `> log`, `| tee log`, a `# comment`) is not the command's.

Each command's arguments go to the script's own parser: `parse_args(argv)` for the three scripts, which also runs every
start-up check (a documented command must not stop with `error: ...`), and the argparse parser of diagnostics.py and
compare_runs.py (parsing only: their folders are examples). The value of `--resume` (a placeholder such as
`runs/<run>`) is replaced by a fake run folder of the right script, so that what --resume checks runs too. A command
that this file cannot read fails, rather than being skipped: placeholders belong in prose or in ```text blocks.
"""

import argparse
import glob
import importlib
import json
import os
import re
import shlex
from typing import NamedTuple

import pytest
import torch

import run_management

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCUMENTS = [
    "README.md",
    *sorted(os.path.relpath(p, REPO_ROOT) for p in glob.glob(os.path.join(REPO_ROOT, "docs", "*.md"))),
]
SCRIPTS = ("dqn_atari_hadamard", "ppo_atari_hadamard", "pqn_atari_hadamard")
TOOLS = ("diagnostics", "compare_runs")
SHELL_FENCES = ("", "bash", "sh", "shell")
RUNS_A_SCRIPT = re.compile(r"\bpython3?\s+(?:\./)?(" + "|".join(SCRIPTS + TOOLS) + r")\.py\b")
SHELL_OPERATORS = ("&", "&&", "|", "||", ";", ">", ">>", "<", "2>", "2>&1", "&>")
VARIABLE = re.compile(r"\$\{?(\w+)\}?")


class Command(NamedTuple):
    where: str  # document:line
    text: str  # the line as the document shows it
    module: str  # the script's module name
    argv: list[str]


def shell_blocks(path: str) -> list[list[tuple[int, str]]]:
    """The shell code blocks of a Markdown file, each as (line number, line) with continued lines joined."""
    blocks, block, fence = [], None, None
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for number, line in enumerate(lines, start=1):
        opening = re.match(r"^\s*(`{3,})\s*([\w+-]*)\s*$", line)
        if block is None and fence is None and opening:
            fence = opening.group(1)
            block = [] if opening.group(2).lower() in SHELL_FENCES else None
            continue
        if fence is not None and line.strip() == fence:
            if block is not None:
                blocks.append(block)
            block, fence = None, None
            continue
        if block is not None:
            if block and block[-1][1].endswith("\\"):  # a continued line
                block[-1] = (block[-1][0], block[-1][1][:-1] + " " + line.strip())
            else:
                block.append((number, line))
    return blocks


def command_of(line: str, variables: dict[str, str]) -> tuple[str, list[str]]:
    """(module, argv) of a shell line that runs a script, or ValueError saying why it cannot be read."""
    unknown = sorted({name for name in VARIABLE.findall(line) if name not in variables})
    if unknown:
        raise ValueError(f"shell variables not set in its block: {', '.join('$' + name for name in unknown)}")
    line = VARIABLE.sub(lambda m: variables[m.group(1)], line)
    tokens = shlex.split(line, comments=True)
    if tokens and tokens[0] == "echo":  # a generated command: echo "python ... "
        tokens = shlex.split(" ".join(tokens[1:]))
    for i, token in enumerate(tokens[:-1]):
        name = os.path.basename(tokens[i + 1])
        if token in ("python", "python3") and name.endswith(".py") and name[:-3] in SCRIPTS + TOOLS:
            argv = tokens[i + 2 :]
            for j, arg in enumerate(argv):
                if arg in SHELL_OPERATORS:
                    argv = argv[:j]
                    break
            return name[:-3], argv
    raise ValueError("no `python <script>.py` in it")


def documented_commands(documents=DOCUMENTS) -> tuple[list[Command], list[str]]:
    """Every command of the documents, and a line for every shell line that runs a script but cannot be read."""
    commands, unreadable = [], []
    for document in documents:
        for block in shell_blocks(os.path.join(REPO_ROOT, document)):
            variables: dict[str, str] = {}
            for number, line in block:
                loop = re.match(r"^\s*for\s+(\w+)\s+in\s+(.+?)\s*;\s*do\s*$", line)
                assignment = re.match(r"^\s*(\w+)=(\S.*)$", line)
                if loop:  # the first value of the loop
                    variables[loop.group(1)] = shlex.split(loop.group(2))[0]
                elif assignment and not RUNS_A_SCRIPT.search(line):
                    variables[assignment.group(1)] = " ".join(shlex.split(assignment.group(2)))
                if not RUNS_A_SCRIPT.search(line):
                    continue
                try:
                    module, argv = command_of(line, variables)
                except ValueError as why:
                    unreadable.append(f"{document}:{number}: {line.strip()}\n    {why}")
                    continue
                commands.append(Command(f"{document}:{number}", line.strip(), module, argv))
    return commands, unreadable


COMMANDS, UNREADABLE = documented_commands()


def fake_run(folder, module) -> str:
    """A run folder as the script leaves a stopped run: its args.json (the defaults), status.json, a checkpoint and
    a model with the network's layers (their values are not read before a run starts)."""
    os.makedirs(folder)
    args = module.Args()
    with open(os.path.join(folder, "args.json"), "w") as f:
        json.dump(vars(args), f)
    with open(os.path.join(folder, "status.json"), "w") as f:
        status = {"script": f"{module.__name__}.py", "status": "interrupted", "host": "elsewhere", "pid": 1}
        json.dump(status, f)
    torch.save({"script": f"{module.__name__}.py", "global_step": 1}, os.path.join(folder, "checkpoint.pt"))
    layers = module.SCRIPT.make_network(args, 1).state_dict()
    torch.save({name: torch.zeros(1) for name in layers}, os.path.join(folder, f"{args.exp_name}.pt"))
    return folder


class Parsed(Exception):
    """Raised in place of running a tool once its command line parsed."""


def check(command: Command, tmp_path, monkeypatch, capsys) -> None:
    """Gives the command's arguments to its script's parser; AssertionError with the script's own words if refused."""
    module = importlib.import_module(command.module)
    argv = list(command.argv)
    if command.module in SCRIPTS:
        for i, arg in enumerate(argv):
            if arg == "--resume" and i + 1 < len(argv):
                argv[i + 1] = fake_run(str(tmp_path / "fake" / "runs" / "a_run"), module)
            elif arg.startswith("--resume="):
                argv[i] = "--resume=" + fake_run(str(tmp_path / "fake" / "runs" / "a_run"), module)
    cwd = tmp_path / "cwd"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    asks_for_help = "--help" in argv or "-h" in argv
    try:
        if command.module in SCRIPTS:
            run_management.parse_args(module.SCRIPT, argv)
        else:
            parse = argparse.ArgumentParser.parse_args

            def parse_then_stop(self, args=None, namespace=None):
                raise Parsed(parse(self, args, namespace))

            monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
            module.main(argv)
            raise AssertionError(f"{command.module}.main did not parse its arguments")
    except Parsed:
        pass
    except SystemExit as stopped:
        said = capsys.readouterr()
        if not (asks_for_help and stopped.code in (0, None)):
            raise AssertionError(
                f"{command.where}: `{command.text}` stops with exit status {stopped.code}:\n{said.err}{said.out}"
            ) from None
    assert os.listdir(cwd) == [], f"{command.where}: parsing `{command.text}` wrote {os.listdir(cwd)}"


@pytest.fixture
def roomy_machine(monkeypatch):
    """A machine with memory enough for the documented DQN runs (the default replay memory takes 7 GB): whether this
    machine has it is not the documents' business. DQN's check reads os.sysconf("SC_PHYS_PAGES")."""
    sysconf = os.sysconf
    pages = 2**40 // sysconf("SC_PAGE_SIZE")  # 1 TiB
    monkeypatch.setattr(os, "sysconf", lambda name: pages if name == "SC_PHYS_PAGES" else sysconf(name))


def test_the_documents_show_commands_of_every_script():
    assert "README.md" in DOCUMENTS and len(DOCUMENTS) > 1, DOCUMENTS
    shown = {command.module for command in COMMANDS}
    assert shown >= set(SCRIPTS + TOOLS), f"no documented command runs {set(SCRIPTS + TOOLS) - shown}"
    assert any(command.where.startswith("README.md:") for command in COMMANDS)
    assert any("--resume" in command.argv for command in COMMANDS)


def test_every_shell_line_that_runs_a_script_can_be_read():
    assert not UNREADABLE, "commands that cannot be checked:\n" + "\n".join(UNREADABLE)


@pytest.mark.parametrize("command", COMMANDS, ids=[command.where for command in COMMANDS])
def test_a_documented_command_passes_the_scripts_checks(command, tmp_path, monkeypatch, capsys, roomy_machine):
    check(command, tmp_path, monkeypatch, capsys)


BROKEN = """
```bash
python pqn_atari_hadamard.py --env-id Breakout-v5 --num-envs 16              # a rollout too small for the probe
python ppo_atari_hadamard.py --env-id Breakout-v5 --no-such-flag
python dqn_atari_hadamard.py --resume runs/<run> --seed 2
for seed in 1 2; do
  OMP_NUM_THREADS=1 nice -n 5 python dqn_atari_hadamard.py --seed $seed --num-envs 4 &
done
python compare_runs.py runs --no-such-option
python diagnostics.py runs/<a> $folder
```
"""


def test_a_broken_command_is_caught(tmp_path, monkeypatch, capsys, roomy_machine):
    document = tmp_path / "broken.md"
    document.write_text(BROKEN)
    commands, unreadable = documented_commands([str(document)])
    assert [line.split("\n")[0].split(": ", 1)[1] for line in unreadable] == ["python diagnostics.py runs/<a> $folder"]
    reasons = [
        "must be at most the states of one rollout",
        "no-such-flag",
        "--seed cannot change",
        "--num-envs must be 1",
        "no-such-option",
    ]
    assert len(commands) == len(reasons)
    for i, (command, reason) in enumerate(zip(commands, reasons)):
        with monkeypatch.context() as patches:
            with pytest.raises(AssertionError, match=re.escape(reason)):
                check(command, tmp_path / str(i), patches, capsys)


def heading_anchors(path: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings: lower case, punctuation dropped, spaces as hyphens."""
    with open(path, encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
    headings = re.findall(r"^#+\s+(.+?)\s*$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


@pytest.mark.parametrize("document", DOCUMENTS)
def test_links_between_the_documents_lead_somewhere(document):
    path = os.path.join(REPO_ROOT, document)
    with open(path, encoding="utf-8") as f:
        text = re.sub(r"```.*?```", "", f.read(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):  # https: and the like
            continue
        file, _, anchor = target.partition("#")
        linked = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
        if not os.path.exists(linked):
            broken.append(f"{target}: no such file")
        elif anchor and linked.endswith(".md") and anchor not in heading_anchors(linked):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{document}: " + "; ".join(broken)
