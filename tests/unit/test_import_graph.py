"""The import graph of the product's modules: no circles, and the core below the processes.

Read from the source with ``ast`` (nothing is imported): every runtime import, at module
level and inside functions, counts; only imports under ``if TYPE_CHECKING:`` do not. The
folders install under one name (setup.cfg's ``package_dir``): ``consumers/`` is
``shardline.consumers``, ``workers/`` ``shardline.workers``, ``loaders/``
``shardline.loaders``.

The core (``shardline.*`` but the commands and operator tools that start or drive the
processes: ``ops``, ``fleet``, ``devstack``, ``cli``/``commands``, ``metrics.main``) never
imports the consumers, stage workers or loaders: the records they share live below them
(``shardline.records``), so a process type can change without the core moving.
"""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = {"shardline": "shardline", "consumers": "shardline.consumers",
         "workers": "shardline.workers", "loaders": "shardline.loaders"}
PROCESSES = ("shardline.workers", "shardline.loaders", "shardline.consumers")
NOT_CORE = PROCESSES + ("shardline.ops", "shardline.fleet", "shardline.devstack",
                        "shardline.cli", "shardline.metrics.main")

Graph = dict[str, set[str]]


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def modules(repo: Path, roots: dict[str, str]) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file under the roots."""
    out: dict[str, Path] = {}
    for folder, package in roots.items():
        for path in sorted((repo / folder).rglob("*.py")):
            parts = list(path.relative_to(repo / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join([package, *parts])] = path
    return out


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the nodes inside ``if TYPE_CHECKING:`` bodies."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for stmt in node.body:
                skip.update(id(n) for n in ast.walk(stmt))
    return skip


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The product modules ``name`` (at ``path``) imports at run time. ``from P import x``
    counts as importing P as well as P.x when that is a module (P's ``__init__`` runs and is
    read), as Python does."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_only(tree)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    named: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package[:len(package) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            named.add(base)
            named.update(f"{base}.{alias.name}" for alias in node.names)
    found = set()
    for target in named:
        while target and target not in known:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)
    return found


def graph(repo: Path = REPO, roots: dict[str, str] = ROOTS) -> Graph:
    mods = modules(repo, roots)
    return {name: imports(path, name, set(mods)) for name, path in mods.items()}


def circles(g: Graph) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for root in sorted(g):
        if root in index:
            continue
        work = [(root, iter(sorted(g[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, edges = work[-1]
            w = next(edges, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(g.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                group = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    group.append(w)
                    if w == v:
                        break
                if len(group) > 1:
                    out.append(sorted(group))
    return out


def core_imports_of_processes(g: Graph) -> list[str]:
    return sorted(f"{m} -> {t}" for m, targets in g.items() for t in targets
                  if _within(m, ("shardline",)) and not _within(m, NOT_CORE)
                  and _within(t, PROCESSES))


def test_no_import_circle_among_product_modules() -> None:
    g = graph()
    assert {"shardline.records.ledger", "shardline.workers.stage",
            "shardline.loaders.loader", "shardline.consumers.consumer"} <= set(g)
    assert circles(g) == []


def test_the_core_never_imports_the_consumers_workers_or_loaders() -> None:
    assert core_imports_of_processes(graph()) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Graph:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return graph(tmp_path, {"shardline": "shardline", "workers": "shardline.workers"})


def test_the_check_sees_function_level_and_package_circles_but_not_type_checking(
        tmp_path: Path) -> None:
    g = _tree(tmp_path, {
        "shardline/__init__.py": "",
        "shardline/a.py": "def f():\n    from shardline import b\n",
        "shardline/b.py": "import shardline.a\n",
        "shardline/c.py": "from typing import TYPE_CHECKING\n"
                          "if TYPE_CHECKING:\n    from shardline import d\n",
        "shardline/d.py": "from shardline.c import x\n",
        "shardline/pkg/__init__.py": "from .m import y\n",
        "shardline/pkg/m.py": "from . import n\n",
        "shardline/pkg/n.py": "",
        "shardline/core.py": "from shardline.workers.stage import Job\n",
        "workers/__init__.py": "",
        "workers/stage.py": "",
    })
    assert circles(g) == [["shardline.a", "shardline.b"],
                          ["shardline.pkg", "shardline.pkg.m"]]
    assert core_imports_of_processes(g) == ["shardline.core -> shardline.workers.stage"]
