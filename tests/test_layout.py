"""The house rules of the tree, read from the source with `ast` (nothing is imported):

- every module of `search/` lives in one of the rooms named in `search/__init__.py`, and imports
  only its own room or rooms below it (`ROOMS`, top first), never one above or beside it;
- an import across rooms names the room's package (`from search.store import Store`) and a
  public name that the room's `__init__` exports — not a module inside it or a private helper;
- no module imports itself back through a chain of imports (no circle), counting the imports
  inside functions too (they run all the same, only later);
- `objectives/` and `workloads/` stay pure: no `search`, Ray, Optuna, SQLAlchemy or FastAPI.

`check_tree` returns the violations of any tree, so the rules can be checked on a copy of an
older layout as well as on this one.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Top first: a room may import the rooms after it in this list (and `search._exports`), rooms on
# the same line are independent of each other.
ROOMS: tuple[tuple[str, ...], ...] = (
    ("cli",),
    ("service",),
    ("outputs",),
    ("sweeps",),
    ("calibration",),
    ("store", "cluster"),
)
BASE = {"search", "search._exports"}  # the package itself and the lazy-export helper
PURE = ("objectives", "workloads")
IMPURE = ("search", "ray", "optuna", "sqlalchemy", "fastapi", "alembic", "uvicorn")


def _rank() -> dict[str, int]:
    return {room: i for i, line in enumerate(ROOMS) for room in line}


def _module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _exports(tree: ast.Module) -> dict[str, str]:
    """A room `__init__`'s `_EXPORTS` (name -> submodule), or the names it imports eagerly."""
    out: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_EXPORTS" for t in node.targets):
            out.update(ast.literal_eval(node.value))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("search."):
            for a in node.names:
                out[a.asname or a.name] = node.module.rsplit(".", 1)[-1]
    return out


def _imports(tree: ast.Module, module: str, is_package: bool) -> list[tuple[str, list[str], int]]:
    """(imported module, names, line) for every import statement, at any depth."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = module.split(".") if is_package else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join([*pkg, base] if base else pkg)
            found.append((base, [a.name for a in node.names], node.lineno))
    return found


def check_tree(root: Path) -> list[str]:
    """Every violation of the rules above in the tree at `root`, one line each."""
    rank = _rank()
    problems: list[str] = []
    trees: dict[str, tuple[Path, ast.Module]] = {}
    for path in sorted((root / "search").rglob("*.py")):
        if "migrations" in path.parts and "versions" in path.parts:
            continue
        trees[_module_name(root, path)] = (path, ast.parse(path.read_text()))
    exports = {m: _exports(t) for m, (p, t) in trees.items() if p.name == "__init__.py" and m.count(".") == 1}

    def room_of(mod: str) -> str | None:
        parts = mod.split(".")
        return parts[1] if len(parts) > 1 and parts[0] == "search" and f"search.{parts[1]}" not in BASE else None

    graph: dict[str, set[str]] = defaultdict(set)
    for mod, (path, tree) in trees.items():
        where = f"{path.relative_to(root)}"
        room = room_of(mod)
        if mod not in BASE and (room not in rank or (mod == f"search.{room}" and path.name != "__init__.py")):
            problems.append(f"{where}: module {mod} is not in a room ({', '.join(rank)})")
        for target, names, line in _imports(tree, mod, path.name == "__init__.py"):
            if not (target == "search" or target.startswith("search.")):
                continue
            # resolve the modules this import runs: a room package's names map to its submodules
            if target == "search" and names:
                deps = {f"search.{n}" for n in names}
            elif target in exports and names:
                deps = set()
                for n in names:
                    if f"{target}.{n}" in trees:  # a submodule, imported through its package
                        deps.add(f"{target}.{n}")
                    elif n in exports[target]:
                        deps.add(f"{target}.{exports[target][n]}")
                    else:
                        deps.add(target)
                        problems.append(f"{where}:{line}: {target} does not export {n!r}")
            else:
                deps = {target}
            graph[mod] |= {d for d in deps if d in trees and d != mod}
            if target in BASE and target != "search":
                continue
            other = room_of(target) if target != "search" else None
            if room not in rank or other is None or other == room:
                continue
            if other not in rank:
                problems.append(f"{where}:{line}: imports {target}, which is not in a room")
            elif rank[other] <= rank[room]:
                problems.append(f"{where}:{line}: {room} imports {target} ({other} is not below {room})")
            if target != f"search.{other}":
                problems.append(f"{where}:{line}: imports {target} across rooms; import from search.{other}")
            private = [n for n in names if n.startswith("_")]
            if private:
                problems.append(f"{where}:{line}: imports private {', '.join(private)} from room {other}")
    problems += [f"import circle: {' -> '.join(c)}" for c in _circles(graph)]
    for pkg in PURE:
        for path in sorted((root / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text())
            for target, _, line in _imports(tree, _module_name(root, path), path.name == "__init__.py"):
                if target.split(".")[0] in IMPURE:
                    problems.append(f"{path.relative_to(root)}:{line}: {pkg}/ must stay pure but imports {target}")
    return problems


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(_cycle_in(graph, set(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    start = min(component)
    path, seen = [start], {start}
    while True:
        nxt = sorted(w for w in graph[path[-1]] if w in component)
        back = [w for w in nxt if w in seen]
        if back:
            return [*path[path.index(back[0]) :], back[0]]
        path.append(nxt[0])
        seen.add(nxt[0])


def test_the_tree_keeps_the_house_rules():
    assert check_tree(ROOT) == []


def test_the_rules_catch_a_flat_tree_with_a_circle(tmp_path):
    """The layout before the rooms: flat modules, one circle through a function-level import."""
    s = tmp_path / "search"
    s.mkdir()
    (tmp_path / "objectives").mkdir()
    (tmp_path / "workloads").mkdir()
    (s / "__init__.py").write_text("")
    (s / "distributed.py").write_text("from search.evaluators import Evaluator\n")
    (s / "evaluators.py").write_text("class Evaluator:\n    def f(self):\n        from search.probes import run\n")
    (s / "probes.py").write_text("def run():\n    from search.distributed import ensure_ray\n")
    problems = check_tree(tmp_path)
    assert any("not in a room" in p for p in problems)
    assert "import circle: search.distributed -> search.evaluators -> search.probes -> search.distributed" in problems


def test_the_rules_catch_an_upward_a_private_and_an_inner_import(tmp_path):
    s = tmp_path / "search"
    for room in ("store", "sweeps"):
        (s / room).mkdir(parents=True)
    (tmp_path / "objectives").mkdir()
    (tmp_path / "workloads").mkdir()
    (tmp_path / "objectives" / "x.py").write_text("import ray\n")
    (s / "__init__.py").write_text("")
    (s / "store" / "__init__.py").write_text('_EXPORTS = {"Store": "db"}\n')
    (s / "store" / "db.py").write_text("def f():\n    from search.sweeps import SweepSpec\nclass Store: ...\n_h = 1\n")
    (s / "sweeps" / "__init__.py").write_text('_EXPORTS = {"SweepSpec": "spec"}\n')
    (s / "sweeps" / "spec.py").write_text("from search.store.db import _h\nclass SweepSpec: ...\n")
    problems = "\n".join(check_tree(tmp_path))
    assert "store imports search.sweeps (sweeps is not below store)" in problems
    assert "imports search.store.db across rooms" in problems
    assert "imports private _h from room store" in problems
    assert "objectives/ must stay pure but imports ray" in problems
    assert "import circle: search.store.db -> search.sweeps.spec -> search.store.db" in problems
