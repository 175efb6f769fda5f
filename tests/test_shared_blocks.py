"""The shape every script keeps (DESIGN.md) and the blocks the three share by design, identical in source, so that a
diff of two scripts shows only the algorithm. Blocks are found by name in the parsed source, not by line numbers.
Run management is no longer repeated: it lives in run_management.py, which tests/test_run_management.py tests.

These are checks of the project's form, not of any algorithm: a change made to one script only (an exercise, a new
network option) fails the sibling checks here although the script is right. The tests of the algorithms are the
others (docs/tests.md). To run the suite without the checks that compare the scripts, keeping those of each script's
own shape and reading budget:

    python -m pytest tests -k 'not (test_shared_blocks and not each_script)'

and without this whole file: python -m pytest tests --deselect tests/test_shared_blocks.py"""

import ast
import difflib
import os

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("dqn_atari_hadamard.py", "ppo_atari_hadamard.py", "pqn_atari_hadamard.py")
SHARED_EVERYWHERE = ("make_env", "find_fire_action", "EpisodeTracker", "stack_frames", "ACTIVATIONS")
# epsilon-greedy scripts only (DQN and PQN); rollout scripts only (PPO and PQN)
SHARED_WHERE_PRESENT = ("linear_schedule", "transition_minibatches")
# arguments of the algorithm section that every script has, with the same meaning (they come first there)
SHARED_ALGORITHM_FIELDS = ("env_id", "total_timesteps", "max_episode_frames", "fire_on_life_loss")
# the budgets a script keeps (issue: scripts as short as their algorithm): its lines, and the last line of train
MOST_LINES = 540
TRAIN_ENDS_BY = {"dqn_atari_hadamard.py": 460, "ppo_atari_hadamard.py": 450, "pqn_atari_hadamard.py": 450}


class Script:
    def __init__(self, name):
        with open(os.path.join(REPO_ROOT, name)) as f:
            self.source = f.read()
        self.name = name
        self.lines = self.source.splitlines()
        self.tree = ast.parse(self.source)

    def text(self, node) -> str:
        """The source lines of a node, decorators included, without the common indentation."""
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        block = self.lines[first - 1 : node.end_lineno]
        indent = min(len(line) - len(line.lstrip()) for line in block if line.strip())
        return "\n".join(line[indent:] for line in block)

    def top_level(self) -> dict:
        """Module-level functions, classes and assignments by name, in file order."""
        nodes = {}
        for node in self.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                nodes[node.name] = node
            elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
                nodes[node.targets[0].id] = node
        return nodes

    def network(self) -> ast.ClassDef:
        (network,) = [
            node
            for node in self.top_level().values()
            if isinstance(node, ast.ClassDef)
            and any(getattr(item, "name", "") == "layer_outputs" for item in node.body)
        ]
        return network

    def method(self, name) -> ast.FunctionDef:
        (method,) = [item for item in self.network().body if getattr(item, "name", "") == name]
        return method

    def args_sections(self) -> dict[str, list[str]]:
        """Args as {section comment: [field lines]}; a section starts at a comment line of its own."""
        (args,) = [node for node in self.tree.body if isinstance(node, ast.ClassDef) and node.name == "Args"]
        sections, current = {}, None
        for line in self.lines[args.lineno : args.end_lineno]:
            if line.strip().startswith("#"):
                current = line.strip()
                sections[current] = []
            elif line.strip():
                sections[current].append(line.strip())
        return sections

    def train(self) -> ast.FunctionDef:
        return self.top_level()["train"]


@pytest.fixture(scope="module")
def scripts():
    return [Script(name) for name in SCRIPTS]


SIBLINGS = (
    "The three scripts repeat this on purpose, line for line, so that a diff of two of them shows only their "
    "algorithms (docs/scripts.md#repeated-on-purpose). A difference is no bug in the algorithm: make the same change "
    "in the other scripts, or, exploring one script, run the suite without the checks that compare them: "
    "python -m pytest tests -k 'not (test_shared_blocks and not each_script)'"
)


def assert_same(texts: dict, what: str):
    """All values equal; else a unified diff of the first that differs, and why the scripts keep it the same."""
    (first, reference), *others = texts.items()
    for name, text in others:
        diff = "\n".join(difflib.unified_diff(reference.splitlines(), text.splitlines(), first, name, lineterm=""))
        assert text == reference, f"{what} differs between {first} and {name}:\n{diff}\n{SIBLINGS}"


def test_each_script_is_its_algorithm_and_hands_the_rest_to_run_management(scripts):
    """Args, the env, the network, train; then its evaluation policy and argument rules, the Script it hands to
    run_management, and a __main__ of at most 3 lines. It defines no run management and imports no other project file."""
    for s in scripts:
        names = list(s.top_level())
        assert names.index("Args") < names.index("make_env") < names.index(s.network().name) < names.index("train")
        assert names.index("train") < names.index("evaluate") < names.index("argument_rules") < names.index("SCRIPT")
        for plumbing in ("Run", "StopRequest", "atomic_save", "write_status", "check_args", "parse_args", "say"):
            assert plumbing not in names, f"{s.name} defines {plumbing}: run management lives in run_management.py"
        (main,) = [node for node in s.tree.body if isinstance(node, ast.If)]
        assert main.end_lineno - main.lineno + 1 <= 3 and main is s.tree.body[-1], s.name
        project = {"diagnostics", "run_management", "compare_runs", *(name[:-3] for name in SCRIPTS)}
        imported = {alias.name for node in s.tree.body if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in s.tree.body if isinstance(node, ast.ImportFrom)}
        assert imported & project == {"diagnostics", "run_management"}, s.name


def test_each_script_keeps_its_reading_budget(scripts):
    """At most MOST_LINES lines, train ends by its line, and the largest definition is train or the algorithm's: the
    scripts are read top to bottom by students, so that every line added is read (a budget, not a bug: an
    exercise's copy of a script may pass it)."""
    for s in scripts:
        assert len(s.lines) <= MOST_LINES, f"{s.name}: {len(s.lines)} lines"
        assert s.train().end_lineno <= TRAIN_ENDS_BY[s.name], f"{s.name}: train ends at line {s.train().end_lineno}"
        definitions = [node for node in s.tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))]
        largest = max(definitions, key=lambda node: node.end_lineno - node.lineno)
        assert largest.name in ("train", "ReplayBuffer"), f"{s.name}: the largest definition is {largest.name}"


@pytest.mark.parametrize("block", SHARED_EVERYWHERE + SHARED_WHERE_PRESENT)
def test_shared_module_blocks_are_identical(scripts, block):
    """A sibling check: the module-level blocks the scripts share (the env, the episode tracking, the activations)."""
    texts = {s.name: s.text(s.top_level()[block]) for s in scripts if block in s.top_level()}
    assert len(texts) >= (3 if block in SHARED_EVERYWHERE else 2), f"{block} is missing from a script. {SIBLINGS}"
    assert_same(texts, block)


def test_shared_module_blocks_come_in_the_same_order(scripts):
    """A sibling check: the shared blocks and the network come in one order, so that the scripts read alike."""
    shared = SHARED_EVERYWHERE + SHARED_WHERE_PRESENT
    orders = {}
    for s in scripts:
        network = s.network().name
        orders[s.name] = [
            "<network>" if name == network else name for name in s.top_level() if name in shared + (network,)
        ]
    for a, b in ((a, b) for a in orders for b in orders if a < b):
        both = set(orders[a]) & set(orders[b])
        assert_same(
            {name: "\n".join(n for n in orders[name] if n in both) for name in (a, b)}, "the shared blocks' order"
        )


@pytest.mark.parametrize("section", ["# Representation", "# Diagnostics", "# Run management"])
def test_args_sections_are_identical(scripts, section):
    """A sibling check: the options of the representation, the diagnostics and run management are one set of flags."""
    texts = {}
    for s in scripts:
        (comment,) = [comment for comment in s.args_sections() if comment.startswith(section)]
        # how each algorithm acts in its evaluation: only the name, type and default of eval_episodes match
        fields = [
            line.split("  #")[0] if line.startswith("eval_episodes") else line for line in s.args_sections()[comment]
        ]
        texts[s.name] = "\n".join([comment, *fields])
    assert_same(texts, f"the Args section {section}")
    assert list(s.args_sections())[-1].startswith("# Run management")  # run management comes last


def test_args_shared_algorithm_fields_are_identical_and_come_first(scripts):
    """A sibling check: the algorithm options every script has (the game, the budget) come first, the same."""
    texts = {}
    for s in scripts:
        (algorithm,) = [fields for comment, fields in s.args_sections().items() if comment.startswith("# Algorithm")]
        assert list(s.args_sections())[0].startswith("# Algorithm"), s.name
        first = algorithm[: len(SHARED_ALGORITHM_FIELDS)]
        assert tuple(line.split(":")[0] for line in first) == SHARED_ALGORITHM_FIELDS, s.name
        texts[s.name] = "\n".join(first)
    assert_same(texts, "the shared algorithm arguments")
    assert all("  # " in line for s in scripts for fields in s.args_sections().values() for line in fields)


def test_the_representation_of_the_networks_is_shared(scripts):
    """A sibling check: the paper's representation is one piece of code, so that the scripts compare one method."""
    assert_same({s.name: s.text(s.method("representation")) for s in scripts}, "representation()")
    # PQN's network adds LayerNorm before every activation; DQN's and PPO's layers are the same code
    plain = [s for s in scripts if s.name != "pqn_atari_hadamard.py"]
    assert_same({s.name: s.text(s.method("layer_outputs")) for s in plain}, "layer_outputs()")
    hadamard_layers = {}
    for s in plain:
        (branch,) = [
            node
            for node in ast.walk(s.method("__init__"))
            if isinstance(node, ast.If) and ast.unparse(node.test) == "hadamard"
        ]
        hadamard_layers[s.name] = s.text(branch)
    assert_same(hadamard_layers, "the construction of the representation layer")


def loop_node(script: Script, test) -> ast.AST:
    (node,) = [node for node in ast.walk(script.train()) if test(node)]
    return node


def test_the_diagnostics_logging_and_the_episode_logging_of_the_loops_are_identical(scripts):
    """A sibling check: the loops log the diagnostics and the games alike, so that their runs compare."""
    calls = {
        s.name: s.text(
            loop_node(s, lambda n: isinstance(n, ast.Call) and ast.unparse(n.func) == "diagnostics.log_diagnostics")
        )
        for s in scripts
    }
    assert_same(calls, "the diagnostics.log_diagnostics call")
    games = {
        s.name: s.text(loop_node(s, lambda n: isinstance(n, ast.For) and ast.unparse(n.iter) == "finished"))
        for s in scripts
    }
    assert_same(games, "the episode logging")


def test_the_rollout_loops_of_ppo_and_pqn_play_a_step_alike(scripts):
    """PPO and PQN send the actions, store the step on the device, recv and keep the flags with the same lines."""
    step_lines = {}
    for s in scripts[1:]:
        loop = loop_node(s, lambda n: isinstance(n, ast.For) and ast.unparse(n.target) == "step")
        body = s.text(loop).splitlines()
        start = next(i for i, line in enumerate(body) if "TRY NOT TO MODIFY: play the step" in line)
        lines = [line for line in body[start:] if not line.lstrip().startswith("#")]
        # what each algorithm stores from its own forward pass (log-probabilities and values, or max-Q) differs
        step_lines[s.name] = "\n".join(
            line for line in lines if not line.lstrip().startswith(("logprobs[", "values[", "max_q[", "truncated["))
        )
    assert_same(step_lines, "playing a step of the rollout")


def test_the_evaluations_differ_only_in_how_they_act(scripts):
    """evaluate() sets up the games, counts each env's first game and reports it the same way in the three scripts;
    only the lines that pick the actions (from the forward pass to the host copy) and the network's name differ."""
    frames = {}
    for s in scripts:
        lines = s.text(s.top_level()["evaluate"]).splitlines()
        start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("envs = make_env("))
        acting = next(i for i, line in enumerate(lines) if line.strip() == "with torch.no_grad():")
        stepping = next(i for i, line in enumerate(lines) if "= envs.step(" in line)
        frames[s.name] = "\n".join(line for line in lines[start : start + 2] + lines[stepping:])
        assert any("= make_network(args, " in line for line in lines[start:acting]), s.name
    assert_same(frames, "evaluate() apart from its actions")


def test_the_network_is_built_in_one_place(scripts):
    """make_network(args, num_actions) builds the network from a run's arguments for training, evaluation and --resume
    (run_management calls it): a new option of the network, passed on there, reaches every path."""
    for s in scripts:
        network = s.network().name
        builders = [
            node.name
            for node in ast.walk(s.tree)
            if isinstance(node, ast.FunctionDef)
            for call in ast.walk(node)
            if isinstance(call, ast.Call) and ast.unparse(call.func) == network
        ]
        assert builders == ["make_network"], f"{s.name}: {network}(...) is called in {builders}"
        make_network = s.top_level()["make_network"]
        assert [arg.arg for arg in make_network.args.args] == ["args", "num_actions"], s.name
        assert "Script(__file__, Args, make_network," in s.text(s.top_level()["SCRIPT"]), s.name
