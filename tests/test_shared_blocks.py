"""The blocks the three scripts share by design are identical in source, so that a diff of two scripts shows only
the algorithm. Blocks are found by name in the parsed source (not by line numbers): functions, classes, assignments,
methods of the network, the fields of Args and the diagnostics call of the training loop."""

import ast
import difflib
import os

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("dqn_atari_hadamard.py", "ppo_atari_hadamard.py", "pqn_atari_hadamard.py")
SHARED_EVERYWHERE = ("atari_game", "make_env", "ACTIVATIONS", "EpisodeTracker", "status_line")
# epsilon-greedy scripts only (DQN and PQN); rollout scripts only (PPO and PQN)
SHARED_WHERE_PRESENT = ("linear_schedule", "transition_minibatches")
# arguments of the algorithm section that every script has, with the same meaning (they come first there)
SHARED_ALGORITHM_FIELDS = ("env_id", "total_timesteps", "max_episode_frames")
# header fields whose help says how each algorithm acts in the evaluation: only their name, type and default match
ALGORITHM_SPECIFIC_HELP = ("eval_episodes",)


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

    def args_sections(self) -> list[tuple[str, list[tuple[str, str, str]]]]:
        """Args as [(section comment, [(field, 'name: type = default' line, help), ...]), ...]; the header's
        section comment is ''. A section starts at a comment line between fields."""
        (args,) = [node for node in self.tree.body if isinstance(node, ast.ClassDef) and node.name == "Args"]
        sections = [("", [])]
        previous_end = args.body[0].lineno - 1
        for i, node in enumerate(args.body):
            if not isinstance(node, ast.AnnAssign):
                continue
            comments = [line.strip() for line in self.lines[previous_end : node.lineno - 1] if line.strip()]
            if comments:
                sections.append(("\n".join(comments), []))
            docstring = args.body[i + 1] if i + 1 < len(args.body) else None
            help_node = docstring if isinstance(docstring, ast.Expr) else node
            help_text = self.text(docstring) if help_node is docstring else ""
            sections[-1][1].append((node.target.id, self.text(node), help_text))
            previous_end = help_node.end_lineno
        return sections

    def diagnostics_call(self) -> str:
        """The training loop's call that logs the diagnostics."""
        (main,) = [node for node in self.tree.body if isinstance(node, ast.If)]
        (call,) = [
            node
            for node in ast.walk(main)
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "diagnostics.log_diagnostics"
        ]
        return self.text(call)


@pytest.fixture(scope="module")
def scripts():
    return [Script(name) for name in SCRIPTS]


def assert_same(texts: dict, what: str):
    """All values equal; else a unified diff of the first that differs."""
    (first, reference), *others = texts.items()
    for name, text in others:
        diff = "\n".join(difflib.unified_diff(reference.splitlines(), text.splitlines(), first, name, lineterm=""))
        assert text == reference, f"{what} differs:\n{diff}"


@pytest.mark.parametrize("block", SHARED_EVERYWHERE + SHARED_WHERE_PRESENT)
def test_shared_module_blocks_are_identical(scripts, block):
    texts = {s.name: s.text(s.top_level()[block]) for s in scripts if block in s.top_level()}
    assert len(texts) >= (3 if block in SHARED_EVERYWHERE else 2), f"{block} is missing from a script"
    assert_same(texts, block)


def test_shared_module_blocks_come_in_the_same_order(scripts):
    shared = SHARED_EVERYWHERE + SHARED_WHERE_PRESENT
    orders = {}
    for s in scripts:
        network = s.network().name
        orders[s.name] = [
            "<network>" if name == network else name for name in s.top_level() if name in shared + (network,)
        ]
    # every two scripts: the blocks both have come in the same order
    for a, b in ((a, b) for a in orders for b in orders if a < b):
        both = set(orders[a]) & set(orders[b])
        assert_same(
            {name: "\n".join(n for n in orders[name] if n in both) for name in (a, b)}, "the shared blocks' order"
        )


def test_args_header_fields_are_identical(scripts):
    headers = {s.name: s.args_sections()[0][1] for s in scripts}
    names = {name: [field for field, _, _ in fields] for name, fields in headers.items()}
    assert_same({name: "\n".join(fields) for name, fields in names.items()}, "the Args header's fields")
    texts = {
        name: "\n".join(
            line if field in ALGORITHM_SPECIFIC_HELP else f"{line}\n{help_text}" for field, line, help_text in fields
        )
        for name, fields in headers.items()
    }
    assert_same(texts, "the Args header")
    assert all(help_text for fields in headers.values() for _, _, help_text in fields), "a field has no help"


@pytest.mark.parametrize("section", ["# Representation", "# Diagnostics"], ids=["representation", "diagnostics"])
def test_args_representation_and_diagnostics_sections_are_identical(scripts, section):
    texts = {}
    for s in scripts:
        (found,) = [(comment, fields) for comment, fields in s.args_sections() if comment.startswith(section)]
        comment, fields = found
        texts[s.name] = "\n".join([comment] + [f"{line}\n{help_text}" for _, line, help_text in fields])
    assert_same(texts, f"the Args section {section}")


def test_args_shared_algorithm_fields_are_identical_and_come_first(scripts):
    texts = {}
    for s in scripts:
        (algorithm,) = [fields for comment, fields in s.args_sections() if comment.startswith("# Algorithm")]
        first = algorithm[: len(SHARED_ALGORITHM_FIELDS)]
        assert tuple(field for field, _, _ in first) == SHARED_ALGORITHM_FIELDS, s.name
        texts[s.name] = "\n".join(f"{line}\n{help_text}" for _, line, help_text in first)
    assert_same(texts, "the shared algorithm arguments")


def test_the_representation_of_the_networks_is_shared(scripts):
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


def test_the_diagnostics_logging_of_the_loops_is_identical(scripts):
    assert_same({s.name: s.diagnostics_call() for s in scripts}, "the diagnostics.log_diagnostics call")


def main_block(script: Script) -> ast.If:
    (main,) = [node for node in script.tree.body if isinstance(node, ast.If)]
    return main


def test_the_episode_logging_of_the_loops_is_identical(scripts):
    """Each training loop logs the games that ended right after EpisodeTracker.step, with the same statement."""
    texts = {}
    for s in scripts:
        (logging,) = [
            node
            for node in ast.walk(main_block(s))
            if isinstance(node, ast.For) and ast.unparse(node.iter) == "finished"
        ]
        texts[s.name] = s.text(logging)
    assert_same(texts, "the episode logging")


def test_the_rollout_loops_of_ppo_and_pqn_play_a_step_alike(scripts):
    """PPO and PQN send the actions, store the step on the device, recv and keep the flags with the same lines."""
    step_lines = {}
    for s in scripts[1:]:
        (loop,) = [
            node for node in ast.walk(main_block(s)) if isinstance(node, ast.For) and ast.unparse(node.target) == "step"
        ]
        body = s.text(loop).splitlines()
        start = next(i for i, line in enumerate(body) if "TRY NOT TO MODIFY: play the step" in line)
        lines = [line for line in body[start:] if not line.lstrip().startswith("#")]
        # what each algorithm stores from its own forward pass (log-probabilities and values, or max-Q) differs
        step_lines[s.name] = "\n".join(
            line for line in lines if not line.lstrip().startswith(("logprobs[", "values[", "max_q[", "truncated["))
        )
    assert_same(step_lines, "playing a step of the rollout")


def test_the_evaluations_differ_only_in_how_they_act(scripts):
    """evaluate() sets up the games, counts each env's first game and logs it the same way in the three scripts; only
    the lines that pick the actions (from the forward pass to the host copy) and the network's name differ."""
    frames = {}
    for s in scripts:
        lines = s.text(s.top_level()["evaluate"]).splitlines()
        start = next(i for i, line in enumerate(lines) if line.lstrip().startswith("envs = make_env("))
        acting = next(i for i, line in enumerate(lines) if line.strip() == "with torch.no_grad():")
        stepping = next(i for i, line in enumerate(lines) if "= envs.step(" in line)
        frame = lines[start:acting] + lines[stepping:]
        frames[s.name] = "\n".join(line for line in frame if not line.lstrip().startswith("num_actions = "))
    assert_same(frames, "evaluate() apart from its actions")
