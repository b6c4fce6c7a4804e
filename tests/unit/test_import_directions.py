"""The allowed import directions between the package's parts (docs/architecture.md).

Every import of `pkg/skillfactory` is parsed (module level and inside function bodies; nothing is
imported): lower parts never import higher ones, and no two parts import each other, even through
others. Imports inside functions are kept for optional or heavy dependencies only (a third-party
module of `HEAVY_OR_OPTIONAL`, or a module of the package that loads one), each with a reason on
its line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.import_graph import Import, forbidden, heavy_modules, imports, part_cycles

PACKAGE = Path(__file__).resolve().parents[2] / "pkg" / "skillfactory"

BASE = ("tasks", "compose", "queue", "engines", "models", "wire")
RULES: dict[str, tuple[str, ...]] = {
    **{part: ("train", "rollout", "stages", "serving", "eval", "cli") for part in BASE},
    "train": ("rollout", "stages", "serving", "cli"),
    "stages": ("serving", "cli"),
    "serving": ("cli",),
}
"""Part → parts it must not import."""

HEAVY_OR_OPTIONAL = {
    "torch",
    "transformers",
    "trl",
    "vllm",
    "ray",
    "datasets",
    "safetensors",
    "peft",
    "gguf",
    "math_verify",
    "matplotlib",
    "grpc_tools",
    "kubernetes",
    "wandb",
    "trackio",
    "accelerate",
    "tokenizers",
    "huggingface_hub",
    "grpc",
    "grpc_health",
    "redis",
    "prometheus_client",
}
"""Third-party modules that may be imported inside a function (with a reason on the line)."""


def has_reason(lines: list[str], line: int) -> bool:
    """A comment on the import's line, or on the line above the block of imports it sits in."""
    index = line - 1
    if "#" in lines[index]:
        return True
    while index > 0:
        index -= 1
        text = lines[index].strip()
        if text.startswith("#"):
            return True
        if not text.startswith(("from ", "import ")):
            return False
    return False


def _describe(edges: list[Import]) -> str:
    return "\n".join(f"{e.path}:{e.line}: {e.source} -> {e.module}" for e in edges)


@pytest.fixture(scope="module")
def edges() -> list[Import]:
    return list(imports(PACKAGE))


def test_the_parser_sees_every_part(edges: list[Import]) -> None:
    assert {"train", "stages", "serving", "cli", "wire", "rollout"} <= {e.source for e in edges}


def test_no_part_imports_a_part_above_it(edges: list[Import]) -> None:
    bad = forbidden(edges, RULES)
    assert not bad, "imports against the layering:\n" + _describe(bad)


def test_no_import_cycle_between_parts(edges: list[Import]) -> None:
    assert part_cycles(edges) == []


def test_package_imports_inside_functions_only_defer_heavy_modules(edges: list[Import]) -> None:
    """The CLI defers loading what pulls in torch so `--help` and `validate` answer at once, and
    optional extras load only when used; any other import inside a function would only hide a
    cycle."""
    heavy = heavy_modules(PACKAGE, HEAVY_OR_OPTIONAL)
    lines = {path: path.read_text().splitlines() for path in {e.path for e in edges}}
    bad = [
        e
        for e in edges
        if e.in_function and (e.module not in heavy or not has_reason(lines[e.path], e.line))
    ]
    assert not bad, "package imports inside functions of light modules, or without a reason:\n" + (
        _describe(bad)
    )


def test_heaviness_follows_module_level_imports(tmp_path: Path) -> None:
    package = tmp_path / "skillfactory"
    (package / "engines").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "engines" / "__init__.py").write_text("")
    (package / "engines" / "hf.py").write_text("import torch\n")
    (package / "engines" / "setup.py").write_text("from skillfactory.engines.hf import X\n")
    (package / "engines" / "base.py").write_text("import json\n")
    heavy = heavy_modules(package, {"torch"})
    assert heavy == {"skillfactory.engines.hf", "skillfactory.engines.setup"}


def _inner_third_party_imports() -> list[tuple[Path, int, str, list[str]]]:
    import ast

    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "v1" in path.relative_to(PACKAGE).parts:
            continue
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.Import):
                    names = [alias.name for alias in inner.names]
                elif isinstance(inner, ast.ImportFrom) and not inner.level:
                    names = [inner.module or ""]
                else:
                    continue
                for name in names:
                    if name.split(".")[0] != "skillfactory":
                        found.append((path, inner.lineno, name, lines))
    return found


def test_third_party_imports_inside_functions_are_heavy_or_optional_with_a_reason() -> None:
    bad = [
        f"{path}:{line}: {name}"
        for path, line, name, lines in _inner_third_party_imports()
        if name.split(".")[0] not in HEAVY_OR_OPTIONAL or not has_reason(lines, line)
    ]
    assert not bad, "imports inside functions that are not heavy/optional, or lack a reason:\n" + (
        "\n".join(bad)
    )


def test_a_forbidden_import_is_caught(tmp_path: Path) -> None:
    """The check fails on a temporary package where a base part imports the learner, and finds
    the cycle that a second import closes."""
    package = tmp_path / "skillfactory"
    for part in ("engines", "train", "wire"):
        (package / part).mkdir(parents=True)
        (package / part / "__init__.py").write_text("")
    (package / "__init__.py").write_text("")
    (package / "train" / "learner.py").write_text("from skillfactory.engines import base\n")
    (package / "engines" / "base.py").write_text("X = 1\n")
    clean = list(imports(package))
    assert not forbidden(clean, RULES)
    assert part_cycles(clean) == []

    (package / "engines" / "slot.py").write_text(
        "def load():\n    from skillfactory.train.learner import GRPOLearner\n"
    )
    (package / "wire" / "store.py").write_text("from ..train import learner\n")
    dirty = list(imports(package))
    bad = forbidden(dirty, RULES)
    assert {(e.source, e.target, e.in_function) for e in bad} == {
        ("engines", "train", True),
        ("wire", "train", False),
    }
    assert part_cycles(dirty) == [["engines", "train"]]
