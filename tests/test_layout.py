"""The package's structural rules, checked on its source with ast (bakery is never imported)."""

from __future__ import annotations

import ast
import functools
import itertools
import textwrap
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

# The package folder these rules read; its parent is the repository root of the allow-lists.
PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "bakery"
# Longest allowed import chain, counted in floors (a module importing nothing of bakery is floor 1).
MAX_FLOORS = 10
# Physical lines of one module file.
MAX_MODULE_LINES = 500
# Lines of one function or method, from its `def` line (decorators excluded) to its last line.
MAX_FUNCTION_LINES = 60
# The one module, relative to the package folder, where every exception class is defined.
ERRORS_MODULE = "errors.py"
# A class whose base's name ends like this is an exception class.
ERROR_SUFFIXES = ("Error", "Exception", "Exit")
# Built-in exceptions a class may derive from (besides the suffixes and the classes of errors.py).
BUILTIN_ERROR_BASES = frozenset({"ValueError", "RuntimeError", "OSError", "KeyError", "TypeError"})
# Repo-relative path prefixes allowed to print or write to sys.stdout / sys.stderr.
PRINT_ALLOWED = ("bakery/cli/", "bakery/bake/chroot_worker.py")
# Repo-relative path prefixes allowed to read `<...>cluster.swarm` / `<...>cluster.engine`.
ENGINE_ALLOWED = (
    "bakery/topology.py",
    "bakery/config/",
    "bakery/providers/openstack/swarm",
    "bakery/providers/local/cluster",
    "bakery/vm/",
)
# The attributes that say whether a workshop is a single VM or a swarm.
ENGINE_ATTRS = frozenset({"swarm", "engine"})
# Methods that write to a stream.
STREAM_WRITES = frozenset({"write", "writelines"})

# module -> imported module -> line numbers of the imports in the importing module.
Graph = dict[str, dict[str, list[int]]]


class Violation(NamedTuple):
    """One broken rule at one place; sorts by path, then line."""

    path: str
    line: int
    what: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where} {self.what}"


@dataclass(frozen=True)
class Module:
    """One source file of the package, parsed."""

    name: str  # bakery.providers.local.vm; a package's __init__.py is the package's name
    path: Path
    rel: str  # the path relative to the repository root, with forward slashes
    lines: int  # physical lines
    tree: ast.Module
    nodes: tuple[ast.AST, ...]  # every node of the tree, walked once for all the rules


@dataclass(frozen=True)
class Package:
    """Every module of a package folder, plus the files that could not be read or parsed."""

    root: Path
    modules: dict[str, Module]
    unreadable: list[Violation]


# --- reading the package ---------------------------------------------------------------------


def module_name(root: Path, path: Path) -> str:
    """bakery/providers/local/vm.py -> bakery.providers.local.vm; pkg/__init__.py -> pkg."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def read_package(root: Path = PACKAGE_ROOT) -> Package:
    """Parse every .py file under root (cached: the rules share one reading)."""
    return _parse_package(root.resolve())


@functools.cache
def _parse_package(root: Path) -> Package:
    modules: dict[str, Module] = {}
    unreadable: list[Violation] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).as_posix()
        try:
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text, filename=str(path))
        except SyntaxError as exc:
            unreadable.append(Violation(rel, exc.lineno or 0, f"does not parse: {exc.msg}"))
            continue
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            unreadable.append(Violation(rel, 0, f"cannot be read: {exc}"))
            continue
        name = module_name(root, path)
        nodes = tuple(ast.walk(tree))
        modules[name] = Module(name, path, rel, len(text.splitlines()), tree, nodes)
    return Package(root, modules, unreadable)


def _from_base(node: ast.ImportFrom, module: Module) -> str | None:
    """The absolute module a `from X import ...` reads from (relative imports resolved)."""
    if node.level == 0:
        return node.module
    parts = module.name.split(".")
    if module.path.name != "__init__.py":
        parts.pop()  # a plain module's `.` is its package
    keep = len(parts) - (node.level - 1)
    if keep <= 0:
        return None  # beyond the top of the package: not ours
    return ".".join([*parts[:keep], *([node.module] if node.module else [])])


def _imported_names(module: Module, modules: dict[str, Module]) -> Iterator[tuple[str, int]]:
    """Every (dotted name, line) the module imports, anywhere in the file."""
    for node in module.nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(node, module)
            if base is None:
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                yield (submodule if submodule in modules else base), node.lineno


def _resolve(name: str, modules: dict[str, Module]) -> str | None:
    """The module a dotted name lands in: itself, or its longest prefix that is a module."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path = PACKAGE_ROOT) -> Graph:
    """Every module of the package with the package modules it imports (self-imports ignored)."""
    modules = read_package(root).modules
    prefix = root.name
    graph: Graph = {name: {} for name in modules}
    for module in modules.values():
        for name, line in _imported_names(module, modules):
            if name != prefix and not name.startswith(prefix + "."):
                continue
            target = _resolve(name, modules)
            if target is not None and target != module.name:
                graph[module.name].setdefault(target, []).append(line)
    for targets in graph.values():
        for target, lines in targets.items():
            targets[target] = sorted(set(lines))
    return graph


# --- cycles and floors -----------------------------------------------------------------------


def strongly_connected(graph: Graph) -> list[list[str]]:
    """Tarjan's components, each sorted; a component comes after every component it imports."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component: list[str] = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _shortest_path(graph: Graph, start: str, goal: str, within: set[str]) -> list[str]:
    """The shortest import path start -> ... -> goal through the modules of `within`."""
    parent: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            break
        for target in sorted(graph[node]):
            if target in within and target not in parent:
                parent[target] = node
                queue.append(target)
    path: list[str] = []
    step: str | None = goal
    while step is not None:
        path.append(step)
        step = parent[step]
    return path[::-1]


def find_cycles(graph: Graph) -> list[tuple[str, ...]]:
    """The shortest cycle through each import edge that is part of a cycle, deduplicated.

    Each cycle is its modules in import order, starting with the smallest name.
    """
    cycles: set[tuple[str, ...]] = set()
    for component in strongly_connected(graph):
        members = set(component)
        if len(members) < 2:
            continue
        for source in component:
            for target in graph[source]:
                if target in members:
                    ring = [source, *_shortest_path(graph, target, source, members)[:-1]]
                    first = ring.index(min(ring))
                    cycles.add(tuple(ring[first:] + ring[:first]))
    return sorted(cycles)


def format_cycle(graph: Graph, cycle: tuple[str, ...]) -> str:
    """`a -> b -> a   (a:3, b:12)`: after each module, the lines where it imports the next."""
    closed = [*cycle, cycle[0]]
    ties = ", ".join(
        f"{a}:{','.join(map(str, graph[a][b]))}" for a, b in itertools.pairwise(closed)
    )
    return f"{' -> '.join(closed)}   ({ties})"


def floors(graph: Graph) -> dict[str, int]:
    """floor(m) = 1 + the highest floor m imports (1 if it imports nothing of the package).

    A cycle counts as one floor: all its modules share it (their cycle fails its own rule).
    """
    component_of: dict[str, int] = {}
    component_floor: list[int] = []
    for number, component in enumerate(strongly_connected(graph)):
        for name in component:
            component_of[name] = number
        below = [
            component_floor[component_of[target]]
            for name in component
            for target in graph[name]
            if component_of[target] != number
        ]
        component_floor.append(1 + max(below, default=0))
    return {name: component_floor[component_of[name]] for name in graph}


def _step_down(graph: Graph, floor: dict[str, int], start: str) -> list[str]:
    """The shortest path from start to a module one floor lower (through start's own cycle)."""
    level = floor[start]
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for target in sorted(graph[node]):
            if target in parent or target == start or floor[target] not in (level, level - 1):
                continue
            parent[target] = node
            if floor[target] == level - 1:
                path = [target]
                while parent[path[-1]] != start:
                    path.append(parent[path[-1]])
                return path[::-1]
            queue.append(target)
    return []


def longest_chain(graph: Graph) -> list[tuple[str, int]]:
    """The import chain down from the highest module to floor 1, as (module, floor) pairs."""
    floor = floors(graph)
    if not floor:
        return []
    current = min(floor, key=lambda name: (-floor[name], name))
    chain = [current]
    while floor[current] > 1:
        steps = _step_down(graph, floor, current)
        if not steps:
            break
        chain.extend(steps)
        current = steps[-1]
    return [(name, floor[name]) for name in chain]


# --- the other rules -------------------------------------------------------------------------


def long_modules(root: Path = PACKAGE_ROOT) -> list[Violation]:
    """Modules over MAX_MODULE_LINES physical lines."""
    return sorted(
        Violation(module.rel, 0, f"({module.lines} lines)")
        for module in read_package(root).modules.values()
        if module.lines > MAX_MODULE_LINES
    )


FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


def _functions(node: ast.AST, prefix: str = "") -> Iterator[tuple[str, FunctionNode]]:
    """Every function and method with its qualified name (Class.method, outer.inner).

    Only statements are descended into: a def cannot hide inside an expression.
    """
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            yield prefix + child.name, child
            yield from _functions(child, f"{prefix}{child.name}.")
        elif isinstance(child, ast.ClassDef):
            yield from _functions(child, f"{prefix}{child.name}.")
        elif isinstance(child, ast.stmt | ast.excepthandler | ast.match_case):
            yield from _functions(child, prefix)


def long_functions(root: Path = PACKAGE_ROOT) -> list[Violation]:
    """Functions over MAX_FUNCTION_LINES lines; a nested function counts alone and in its parent."""
    violations = []
    for module in read_package(root).modules.values():
        for name, node in _functions(module.tree):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                violations.append(Violation(module.rel, node.lineno, f"{name} ({length} lines)"))
    return sorted(violations)


def _base_name(base: ast.expr) -> str | None:
    """The class name a base ends in: Error, errors.BakeryError; Generic[T] -> Generic."""
    if isinstance(base, ast.Subscript):
        base = base.value
    if isinstance(base, ast.Name):
        return base.id
    if isinstance(base, ast.Attribute):
        return base.attr
    return None


def _is_error_base(base: ast.expr, error_names: set[str]) -> bool:
    name = _base_name(base)
    return name is not None and (name.endswith(ERROR_SUFFIXES) or name in error_names)


def misplaced_exceptions(root: Path = PACKAGE_ROOT) -> list[Violation]:
    """Exception classes defined outside ERRORS_MODULE (also those deriving from such a class)."""
    errors_path = root.resolve() / ERRORS_MODULE
    classes = [
        (module, node)
        for module in read_package(root).modules.values()
        for node in module.nodes
        if isinstance(node, ast.ClassDef)
    ]
    error_names = set(BUILTIN_ERROR_BASES)
    error_names.update(node.name for module, node in classes if module.path == errors_path)
    found: dict[tuple[str, int], Violation] = {}
    grown = True
    while grown:  # a class deriving from a misplaced exception class is one too
        grown = False
        for module, node in classes:
            key = (module.rel, node.lineno)
            if module.path == errors_path or key in found:
                continue
            if any(_is_error_base(base, error_names) for base in node.bases):
                found[key] = Violation(module.rel, node.lineno, f"class {node.name}")
                error_names.add(node.name)
                grown = True
    return sorted(found.values())


def _sys_names(module: Module) -> set[str]:
    """The names the sys module goes by in a file (`import sys`, `import sys as _sys`)."""
    names = {"sys"}
    for node in module.nodes:
        if isinstance(node, ast.Import):
            names.update(
                alias.asname for alias in node.names if alias.name == "sys" and alias.asname
            )
    return names


def _is_std_stream(expr: ast.expr, sys_names: set[str]) -> bool:
    """sys.stdout, sys.stderr, or their .buffer."""
    if isinstance(expr, ast.Attribute) and expr.attr == "buffer":
        expr = expr.value
    return (
        isinstance(expr, ast.Attribute)
        and expr.attr in {"stdout", "stderr"}
        and isinstance(expr.value, ast.Name)
        and expr.value.id in sys_names
    )


def _short(node: ast.AST, width: int = 70) -> str:
    return textwrap.shorten(ast.unparse(node), width, placeholder=" ...")


def _output_write(node: ast.AST, sys_names: set[str]) -> str | None:
    """What the node writes to the terminal, if it does: print(...), sys.stdout.write, file=."""
    if isinstance(node, ast.Call):
        if isinstance(node.func, ast.Name) and node.func.id == "print":
            return _short(node)
        for keyword in node.keywords:
            if keyword.arg == "file" and _is_std_stream(keyword.value, sys_names):
                return f"file={ast.unparse(keyword.value)}"
    if (
        isinstance(node, ast.Attribute)
        and node.attr in STREAM_WRITES
        and _is_std_stream(node.value, sys_names)
    ):
        return ast.unparse(node)
    return None


def terminal_writes(root: Path = PACKAGE_ROOT) -> list[Violation]:
    """print() calls and sys.stdout / sys.stderr writes outside PRINT_ALLOWED."""
    violations = []
    for module in read_package(root).modules.values():
        if module.rel.startswith(PRINT_ALLOWED):
            continue
        sys_names = _sys_names(module)
        for node in module.nodes:
            what = _output_write(node, sys_names)
            if what is not None:
                violations.append(Violation(module.rel, getattr(node, "lineno", 0), what))
    return sorted(violations)


def engine_reads(root: Path = PACKAGE_ROOT) -> list[Violation]:
    """Reads of `<...>cluster.swarm` / `<...>cluster.engine` outside ENGINE_ALLOWED."""
    violations = []
    for module in read_package(root).modules.values():
        if module.rel.startswith(ENGINE_ALLOWED):
            continue
        for node in module.nodes:
            if (
                isinstance(node, ast.Attribute)
                and node.attr in ENGINE_ATTRS
                and ast.unparse(node.value).endswith("cluster")
            ):
                violations.append(Violation(module.rel, node.lineno, ast.unparse(node)))
    return sorted(violations)


def report(title: str, lines: Iterable[object]) -> str:
    """A failure message: the title, then one violation per line."""
    return "\n".join([title, *(f"  {line}" for line in lines)])


# --- the rules -------------------------------------------------------------------------------


def test_every_module_parses() -> None:
    """The rules below read the ast: a file that does not parse would escape all of them."""
    unreadable = read_package().unreadable
    if unreadable:
        title = "Files the layout rules cannot read:"
        pytest.fail(report(title, sorted(unreadable)), pytrace=False)


def test_no_import_cycles() -> None:
    """A cycle makes two modules one concern in two files: neither can be read, moved or tested
    alone. TYPE_CHECKING and function-level imports count: they only hide the cycle."""
    graph = import_graph()
    cycles = find_cycles(graph)
    if cycles:
        lines = [format_cycle(graph, cycle) for cycle in cycles]
        title = "Import cycles (after each module, the lines where it imports the next):"
        pytest.fail(report(title, lines), pytrace=False)


def test_floors() -> None:
    """The package reads bottom-up, floor by floor; past MAX_FLOORS a change at the bottom ripples
    through more layers than a reader can hold."""
    graph = import_graph()
    chain = longest_chain(graph)
    top = max((floor for _, floor in chain), default=0)
    if top > MAX_FLOORS:
        cyclic = {name for group in strongly_connected(graph) if len(group) > 1 for name in group}
        lines = [
            f"floor {floor:>2}  {name}" + ("  (in an import cycle)" if name in cyclic else "")
            for name, floor in chain
        ]
        title = f"{top} floors (max {MAX_FLOORS}); the longest chain, each importing the next:"
        pytest.fail(report(title, lines), pytrace=False)


def test_module_length() -> None:
    """A reader guesses the file from the wing; 500 lines is where a module stops being one
    concern."""
    violations = long_modules()
    if violations:
        title = f"Modules over {MAX_MODULE_LINES} lines:"
        pytest.fail(report(title, violations), pytrace=False)


def test_function_length() -> None:
    """A function is read in one screen; past 60 lines it is several steps that want names."""
    violations = long_functions()
    if violations:
        title = f"Functions over {MAX_FUNCTION_LINES} lines (def line to last line):"
        pytest.fail(report(title, violations), pytrace=False)


def test_exceptions_live_in_errors() -> None:
    """One hierarchy, one file: the CLI catches BakeryError once and maps it to an exit code, so
    an exception class defined elsewhere is one the edge may not know how to report."""
    violations = misplaced_exceptions()
    if violations:
        title = f"Exception classes outside bakery/{ERRORS_MODULE}:"
        pytest.fail(report(title, violations), pytrace=False)


def test_terminal_output_only_at_the_edge() -> None:
    """The library returns and raises; only the CLI (and the chroot worker, whose stdout is its
    protocol) talks to the terminal, so output stays testable and quiet when embedded."""
    violations = terminal_writes()
    if violations:
        title = f"Terminal output outside {', '.join(PRINT_ALLOWED)}:"
        pytest.fail(report(title, violations), pytrace=False)


def test_single_or_swarm_decided_in_one_place() -> None:
    """Single VM vs swarm is one decision: code that branches on cluster.swarm/engine itself
    spreads it, and a third engine would have to find every branch."""
    violations = engine_reads()
    if violations:
        title = "Reads of cluster.swarm / cluster.engine outside ENGINE_ALLOWED:"
        pytest.fail(report(title, violations), pytrace=False)


# --- the reader itself: the rules must not pass vacuously -------------------------------------


def test_reader_sees_the_real_package() -> None:
    """The graph of bakery has its modules and its known edges (bakery.errors is widely used)."""
    graph = import_graph()
    assert len(graph) > 40, sorted(graph)
    importers = [name for name, targets in graph.items() if "bakery.errors" in targets]
    assert len(importers) >= 10, importers
    assert "bakery" in graph
    assert "bakery.errors" not in graph["bakery.errors"]


def _write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_reader_on_a_synthetic_package(tmp_path: Path) -> None:
    """Two modules importing each other (one through TYPE_CHECKING, one in a function) are a
    cycle; floors and the longest chain follow relative and `from pkg.sub import name` imports."""
    root = _write_package(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "a.py": """\
                from typing import TYPE_CHECKING

                if TYPE_CHECKING:
                    from pkg import b
            """,
            "b.py": """\
                import os


                def f():
                    from . import a
            """,
            "c.py": "import pkg.a\nimport pkg.c\n",
            "sub/__init__.py": "helper = 1\n",
            "sub/d.py": "from .. import c\nfrom pkg.sub import helper\nfrom ..nothere import x\n",
        },
    )
    graph = import_graph(root)
    assert graph == {
        "pkg": {},
        "pkg.a": {"pkg.b": [4]},
        "pkg.b": {"pkg.a": [5]},
        "pkg.c": {"pkg.a": [1]},
        "pkg.sub": {},
        "pkg.sub.d": {"pkg.c": [1], "pkg.sub": [2], "pkg": [3]},
    }
    cycles = find_cycles(graph)
    assert cycles == [("pkg.a", "pkg.b")]
    assert format_cycle(graph, cycles[0]) == "pkg.a -> pkg.b -> pkg.a   (pkg.a:4, pkg.b:5)"
    assert floors(graph) == {
        "pkg": 1,
        "pkg.a": 1,
        "pkg.b": 1,
        "pkg.c": 2,
        "pkg.sub": 1,
        "pkg.sub.d": 3,
    }
    assert longest_chain(graph) == [("pkg.sub.d", 3), ("pkg.c", 2), ("pkg.a", 1)]


def test_rule_finders_on_a_synthetic_package(tmp_path: Path) -> None:
    """Each finder reports what it is for, and honours its allow-list."""
    body = "\n".join(f"    x = {i}" for i in range(MAX_FUNCTION_LINES))
    root = _write_package(
        tmp_path / "bakery",
        {
            "errors.py": "class BakeryError(Exception):\n    pass\n",
            "cli/app.py": "import sys\nprint('ok')\nsys.stdout.write('ok')\n",
            "long.py": "x = 1\n" * (MAX_MODULE_LINES + 1),
            "mod.py": textwrap.dedent(
                """\
                import sys as _sys
                from bakery import errors


                class Local(errors.BakeryError):
                    pass


                class Deeper(Local):
                    pass


                def talk(cfg):
                    print("hi", file=_sys.stderr)
                    _sys.stdout.buffer.write(b"x")
                    return cfg.cluster.swarm or cfg.workers.engine


                """
            )
            + "def long():\n"
            + body,
        },
    )
    assert long_modules(root) == [Violation("bakery/long.py", 0, f"({MAX_MODULE_LINES + 1} lines)")]
    assert long_functions(root) == [
        Violation("bakery/mod.py", 19, f"long ({MAX_FUNCTION_LINES + 1} lines)")
    ]
    assert misplaced_exceptions(root) == [
        Violation("bakery/mod.py", 5, "class Local"),
        Violation("bakery/mod.py", 9, "class Deeper"),
    ]
    assert terminal_writes(root) == [
        Violation("bakery/mod.py", 14, "print('hi', file=_sys.stderr)"),
        Violation("bakery/mod.py", 15, "_sys.stdout.buffer.write"),
    ]
    assert engine_reads(root) == [Violation("bakery/mod.py", 16, "cfg.cluster.swarm")]
