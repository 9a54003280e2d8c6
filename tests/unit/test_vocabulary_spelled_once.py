"""Each word of link's vocabulary is spelled once (issue 16, point 6): the VIP's states and
events (link.vocabulary.vip_states), the worker process's states and events
(link.supervisor.worker_states) and the fault policies (link.vocabulary.fault_policies) are
never written again as bare strings in link/; link-client's own copies (it imports nothing
of the agent) are checked equal here."""
from __future__ import annotations

import ast
import pathlib

from link.cli import link_client, output
from link.supervisor.worker_states import WorkerEvent, WorkerState
from link.vocabulary.fault_policies import FaultPolicy
from link.vocabulary.vip_states import Event, State

LINK = pathlib.Path(__file__).resolve().parents[2] / "link"
DEFINED_IN = {"vocabulary/vip_states.py", "supervisor/worker_states.py", "vocabulary/fault_policies.py"}
CLIENT = {"cli/link_client.py", "cli/output.py"}  # its copies, checked equal below


def _docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                found.add(id(first.value))
    return found


def bare_spellings(words: set[str], where: pathlib.Path = LINK) -> list[str]:
    """`path:line 'word'` for each string literal in link/ (docstrings aside) that is one of `words`."""
    found = []
    for path in sorted(where.rglob("*.py")):
        name = path.relative_to(where).as_posix()
        if name in DEFINED_IN or name in CLIENT:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _docstrings(tree)
        found += [f"{name}:{node.lineno} {node.value!r}" for node in ast.walk(tree)
                  if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in words
                  and id(node) not in skip]
    return found


def test_state_and_event_names_are_spelled_only_in_their_tables() -> None:
    words = {m.value for enum in (State, Event, WorkerState, WorkerEvent) for m in enum}
    # "stop" is also the name of a pipe message (link.vocabulary.protocol.Stop), another word.
    assert bare_spellings(words - {WorkerEvent.STOP.value}) == []


def test_fault_policies_are_compared_as_members() -> None:
    # "activate", "keep" and "release" are also a binder's action and a wire decision: the
    # policy-only name is not spelled anywhere, and nothing compares a fault_policy to a string.
    assert bare_spellings({FaultPolicy.ARBITRATE.value}) == []
    compared = []
    for path in sorted(LINK.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare) and "fault_policy" in ast.unparse(node.left):
                compared += [f"{path.name}:{node.lineno}" for c in node.comparators
                             if isinstance(c, ast.Constant) and c.value in {p.value for p in FaultPolicy}]
    assert compared == []


def test_the_check_sees_a_bare_state(tmp_path: pathlib.Path) -> None:
    (tmp_path / "x.py").write_text('"""FAILING in a docstring is prose."""\nstate = "FAILING"\n', encoding="utf-8")
    assert bare_spellings({"FAILING"}, tmp_path) == ["x.py:2 'FAILING'"]


def test_the_client_s_copies_are_the_agent_s_words() -> None:
    assert link_client.FAULT_POLICIES == tuple(p.value for p in FaultPolicy)
    assert output.WORKER_RUNNING == WorkerState.RUNNING.value
