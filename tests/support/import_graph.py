"""Every import of a package, module level and inside functions, as edges between its parts.

A *part* is a subpackage (`skillfactory.train`) or a top-level module (`skillfactory.runspec`):
the second component of the imported name. `imports(root)` parses every `.py` file under `root`
with `ast` (nothing is imported), resolves relative imports, and yields one `Import` per
`import`/`from … import` statement that names the package, with the file, line and whether it
sits inside a function body. `forbidden(edges, rules)` and `part_cycles(edges)` check them.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Import:
    """One import statement of the package naming the package."""

    path: Path
    line: int
    source: str
    """Part the importing file belongs to."""
    target: str
    """Part the import names."""
    module: str
    """Full name of the imported module."""
    in_function: bool


def module_name(root: Path, path: Path) -> str:
    """`skillfactory.train.learner` for `<root>/train/learner.py` (root is the package folder)."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def part_of(module: str) -> str:
    """The part of a module: its second name component (the package itself for the top)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _function_imports(tree: ast.AST) -> set[int]:
    inner: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            inner.update(
                id(n) for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)
            )
    return inner


def _is_module(root: Path, name: str) -> bool:
    parts = name.split(".")[1:]
    return bool(parts) and (
        root.joinpath(*parts).with_suffix(".py").is_file()
        or (root.joinpath(*parts) / "__init__.py").is_file()
    )


def _targets(node: ast.Import | ast.ImportFrom, package: str, root: Path) -> list[str]:
    """The modules an import statement loads: `from a import b` names `a.b` when that is a
    module of the package, else `a`."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
        module = ".".join([*base, *([node.module] if node.module else [])])
    else:
        module = node.module or ""
    submodules = [
        f"{module}.{a.name}" for a in node.names if _is_module(root, f"{module}.{a.name}")
    ]
    return submodules or [module]


def imports(root: Path, skip: Iterable[str] = ("v1",)) -> Iterator[Import]:
    """Every import naming the package `root` (a folder) in its own files, minus `skip` parts."""
    name = root.name
    for path in sorted(root.rglob("*.py")):
        module = module_name(root, path)
        if part_of(module) in skip:
            continue
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text(), str(path))
        inner = _function_imports(tree)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for target in _targets(node, package, root):
                if target == name or target.startswith(name + "."):
                    yield Import(
                        path,
                        node.lineno,
                        part_of(module),
                        part_of(target),
                        target,
                        id(node) in inner,
                    )


def forbidden(edges: Iterable[Import], rules: Mapping[str, Iterable[str]]) -> list[Import]:
    """Imports from a part into a part its rule forbids (`rules[source]`: forbidden targets)."""
    return [e for e in edges if e.source != e.target and e.target in set(rules.get(e.source, ()))]


def part_cycles(edges: Iterable[Import]) -> list[list[str]]:
    """Strongly connected sets of more than one part (each a cycle between parts), sorted."""
    graph: dict[str, set[str]] = defaultdict(set)
    for edge in edges:
        if edge.source and edge.target and edge.source != edge.target:
            graph[edge.source].add(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def _module_level_imports(root: Path) -> dict[str, set[str]]:
    """Module → names it imports at module level (package modules and third-party roots)."""
    found: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        module = module_name(root, path)
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text(), str(path))
        names: set[str] = set()
        for node in tree.body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                names.update(_targets(node, package, root))
        found[module] = names
    return found


def heavy_modules(root: Path, heavy: Iterable[str]) -> set[str]:
    """Package modules that load a heavy or optional third-party module when imported: they
    import one at module level, or import such a package module (to a fixed point)."""
    imported = _module_level_imports(root)
    heavy_roots = set(heavy)
    result = {m for m, names in imported.items() if {n.split(".")[0] for n in names} & heavy_roots}
    changed = True
    while changed:
        changed = False
        for module, names in imported.items():
            if module in result:
                continue
            loaded = {n for name in names for n in _with_packages(name)} | _with_packages(module)
            if loaded & result:
                result.add(module)
                changed = True
    return result


def _with_packages(module: str) -> set[str]:
    """A module and the packages Python imports first to reach it (`a.b.c`: `a`, `a.b`)."""
    parts = module.split(".")
    return {".".join(parts[: i + 1]) for i in range(len(parts))}
