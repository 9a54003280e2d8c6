"""The import graph of link/: no cycle anywhere, and the supervisor loads nothing of a worker
but its fork entry point (issue 16). Read from the source with ast, every import counted:
module level, inside functions (loaded later, still a dependency) and under TYPE_CHECKING."""
from __future__ import annotations

import ast
import importlib
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "link"


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, pathlib.Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """The modules of link/ that `name` imports; `from a import b` counts as a.b when that is a
    module, else as a."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            # `import a.b.c` loads a, a.b and a.b.c: the deepest module of ours is the edge.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a list of modules (first == last), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = GREY
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if colour.get(nxt) == GREY:
                return stack[stack.index(nxt):] + [nxt]
            if colour.get(nxt) == WHITE:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        colour[node] = BLACK
        return None

    for start in sorted(graph):
        if colour[start] == WHITE:
            cycle = visit(start)
            if cycle:
                return cycle
    return None


def test_the_graph_is_read_whole() -> None:
    graph = import_graph()
    # A reader that missed imports would find no cycle anywhere: it must see these edges.
    assert "link.worker.entry" in graph["link.supervisor.ops"]  # inside a function
    assert "link.vocabulary.protocol" in graph["link.api.app"]  # from link import protocol
    assert "link.worker.main" in graph["link.worker.entry"]
    assert "link.api.app" in graph["link.api"]  # a package's __init__


def test_no_import_cycle_in_link() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle() -> None:
    # The mixins of old: link.worker.main and link.worker.supervisor_link imported each other.
    graph = {**import_graph(), "link.worker.supervisor_link": {"link.worker.main"}}
    assert find_cycle(graph) == ["link.worker.main", "link.worker.supervisor_link", "link.worker.main"]


def test_the_supervisor_imports_only_the_workers_entry_point() -> None:
    graph = import_graph()
    for name, targets in graph.items():
        if name.startswith("link.supervisor"):
            reached = {t for t in targets if t.startswith("link.worker")}
            assert reached <= {"link.worker.entry"}, f"{name} imports {sorted(reached)}"


@pytest.mark.parametrize("name", sorted(n for n in modules() if n.startswith("link.vocabulary.")))
def test_the_vocabulary_modules_are_leaves(name: str) -> None:
    # The words every process shares import nothing but each other: no process, no library.
    assert {t for t in import_graph()[name] if not t.startswith("link.vocabulary")} == set()
    tree = ast.parse(modules()[name].read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"grpc", "etcd3", "scapy", "pyroute2", "bottle", "waitress", "prometheus_client"}


def test_the_cli_shares_nothing_with_the_agent_but_json() -> None:
    # link-client talks to an agent (ours or LinK v2's) over HTTP only: it imports none of the
    # agent's modules, so it runs where the agent's libraries are not installed.
    for name, targets in import_graph().items():
        if name.startswith("link.cli"):
            assert {t for t in targets if not t.startswith("link.cli")} <= {"link"}, f"{name} imports {sorted(targets)}"


def test_the_adapters_and_etcd_layers_know_no_process() -> None:
    # OS adapters and the etcd layer serve the worker, the API and the one-shot commands alike.
    for name, targets in import_graph().items():
        if name.startswith(("link.adapters", "link.etcd")):
            processes = {t for t in targets if t.startswith(("link.worker", "link.supervisor", "link.api", "link.agent"))}
            assert processes == set(), f"{name} imports {sorted(processes)}"


WIRE_MAY_IMPORT = ("link.wire", "link.vocabulary", "link.security_settings")


def wire_rule_breaches(name: str) -> set[str]:
    """What `name` imports beyond the standard library, link.wire, link.vocabulary and
    link.security_settings (the `link` package itself counts as nothing)."""
    ours = {t for t in import_graph()[name] if t != "link" and not t.startswith(WIRE_MAY_IMPORT)}
    tree = ast.parse(modules()[name].read_text())
    tops = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    tops |= {node.module.split(".")[0] for node in ast.walk(tree)
             if isinstance(node, ast.ImportFrom) and node.module and not node.level}
    return ours | {t for t in tops if t not in sys.stdlib_module_names and t not in ("link", "__future__")}


@pytest.mark.parametrize("name", sorted(n for n in modules() if n == "link.wire" or n.startswith("link.wire.")))
def test_the_wire_package_imports_only_the_standard_library_and_the_vocabulary(name: str) -> None:
    # The wire's codec, table and rules are pure: the supervisor holds the socket, a worker
    # applies the rules, and both can be tested on faked datagrams and clocks.
    assert wire_rule_breaches(name) == set()


def test_the_wire_rule_sees_a_breach() -> None:
    assert "link.config" in wire_rule_breaches("link.supervisor.wire_link")


@pytest.mark.parametrize("name", sorted(modules()))
def test_every_module_imports(name: str) -> None:
    importlib.import_module(name)
