"""docs/ARCHITECTURE.md's "Map of the code" and the walk of a POST /ips stay true (issue 16,
point 7): every package of link/ is on the map and nothing on it is gone, the API and the
worker stay apart, and every path, module and `file.py:function` the docs name exists.

The docs are read as text; the code with ast (nothing is imported), so a name that moved or
was renamed fails here with the doc line to fix."""
from __future__ import annotations

import ast
import functools
import pathlib
import re

import pytest

from tests.unit.test_import_graph import import_graph

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "link"
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
# The prose that names the code: the Debian package's man pages and notes included.
DOCS = (ARCHITECTURE, ROOT / "README.md", ROOT / "BENCHMARKS.md", ROOT / "packaging" / "README.md",
        *sorted(p for p in (ROOT / "packaging" / "debian").rglob("*") if p.is_file()))

# A repository path as prose writes it: not the tail of an absolute path (/link/hosts/ in etcd,
# /etc/link/scripts on disk).
PATH = re.compile(r"(?<![\w/.~-])link/[\w/.-]*[\w/]")
FUNCTION = re.compile(r"`(link/[\w/]+\.py):([\w.]+)`")
DOTTED = re.compile(r"`(?:python3? -m )?(link(?:\.\w+)+)`")
BULLET = re.compile(r"^\* \*\*`(link/[\w/]*)`\*\*")
GROUND_BULLET = re.compile(r"^  \* ((?:`link/\w+\.py`(?:, )?)+) —")


def section(text: str, title: str) -> str:
    assert f"\n## {title}\n" in text, f"docs/ARCHITECTURE.md has no section {title!r}"
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else len(text)]


def the_map() -> str:
    return section(ARCHITECTURE.read_text(), "Map of the code")


def map_bullets() -> dict[str, str]:
    """Each package bullet of the map: its path (`link/worker/`) -> its text."""
    bullets: dict[str, str] = {}
    current = None
    for line in the_map().splitlines():
        head = BULLET.match(line)
        if head:
            current = head.group(1)
            bullets[current] = ""
        elif line.startswith("* ") or not line.strip():
            current = None
        if current is not None:
            bullets[current] += line + "\n"
    return bullets


def packages() -> set[str]:
    return {str(init.parent.relative_to(ROOT)) + "/" for init in PACKAGE.rglob("__init__.py") if init.parent != PACKAGE}


def ground_floor() -> set[str]:
    return {str(path.relative_to(ROOT)) for path in PACKAGE.glob("*.py") if path.name != "__init__.py"}


@functools.cache
def defined_names(path: pathlib.Path) -> frozenset[str]:
    """Every function and class of a module by its dotted path inside it (`Worker.cycle`,
    `make_app.add_ip` for a function defined inside another)."""
    names: set[str] = set()

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(prefix + child.name)
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)  # inside an if, a with, a try: same scope

    visit(ast.parse(path.read_text(), str(path)), "")
    return frozenset(names)


def module_path(dotted: str) -> pathlib.Path | None:
    base = ROOT.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def test_the_map_names_every_package_and_ground_floor_module() -> None:
    named = set(map_bullets())
    assert named - packages() == set(), "the map names packages that do not exist"
    assert packages() - named == set(), "packages missing from docs/ARCHITECTURE.md's map"
    ground = {name.strip("`") for line in the_map().splitlines() if (m := GROUND_BULLET.match(line))
              for name in m.group(1).split(", ")}
    assert ground - ground_floor() == set(), "the map's ground floor names modules that do not exist"
    assert ground_floor() - ground == set(), "modules of link/ missing from the map's ground floor"


def test_the_map_names_only_modules_of_each_package() -> None:
    # `fsm.py` in the link/worker/ bullet is link/worker/fsm.py (full paths are checked below).
    for package, text in map_bullets().items():
        for name in re.findall(r"`(\w+\.(?:py|json))`", text):
            assert (ROOT / package / name).is_file(), f"the map's {package} names {name}, which is not there"


def test_the_api_and_the_worker_import_nothing_of_each_other() -> None:
    # Two kinds of process that only talk through the supervisor's pipes (the map says so).
    for source, targets in import_graph().items():
        for mine, theirs in (("link.api", "link.worker"), ("link.worker", "link.api")):
            if source == mine or source.startswith(mine + "."):
                crossing = {t for t in targets if t == theirs or t.startswith(theirs + ".")}
                assert crossing == set(), f"{source} imports {sorted(crossing)}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_the_docs_name_exists(doc: pathlib.Path) -> None:
    text = doc.read_text(errors="replace")
    missing = sorted({m.group(0) for m in PATH.finditer(text) if not (ROOT / m.group(0)).exists()})
    assert missing == [], f"{doc.name} names paths that are not in the repository"
    for dotted in sorted(set(DOTTED.findall(text))):
        if module_path(dotted) is None:
            module, _, name = dotted.rpartition(".")
            path = module_path(module)
            assert path is not None and name in defined_names(path), f"{doc.name}: `{dotted}` is no module of link"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_named_function_exists(doc: pathlib.Path) -> None:
    for path, name in FUNCTION.findall(doc.read_text(errors="replace")):
        assert (ROOT / path).is_file(), f"{doc.name}: {path} does not exist"
        assert name in defined_names(ROOT / path), f"{doc.name}: {path} defines no {name}"


def test_the_walk_is_one_numbered_list_through_real_functions() -> None:
    walk = section(ARCHITECTURE.read_text(), "From `POST /ips` to the first gratuitous ARP")
    steps = [int(n) for n in re.findall(r"^(\d+)\. ", walk, flags=re.M)]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 20
    named = FUNCTION.findall(walk)
    # It goes from the HTTP server to the announcement, through the pipe and the fork.
    for hop in (("link/api/http_server.py", "LinkServer.handle_accept"),
                ("link/supervisor/requests.py", "RequestHandlers.add_ip"),
                ("link/worker/entry.py", "build_worker"),
                ("link/worker/election.py", "Election.run_cycle"),
                ("link/adapters/announce.py", "Announcer.run_due")):
        assert hop in named, f"the walk misses {hop[0]}:{hop[1]}"


def test_the_name_reader_finds_nested_functions_and_methods() -> None:
    names = defined_names(PACKAGE / "api" / "app.py")
    assert {"make_app", "make_app.add_ip", "_JsonBottle.default_error_handler"} <= names
    assert "add_ip" not in names  # only by its full path inside the module
