"""spine.evaluation's data flow is one way: metrics <- run / png <- report <- spine.evaluate
(the CLI). Each module may import only the ones before it, at run time (imports under
TYPE_CHECKING are for annotations only), so no import cycle can come back."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SPINE = Path(__file__).resolve().parents[2] / "spine"
# Module -> the evaluation modules it must not import (those after it in the flow).
LATER = {
    "spine.evaluation.metrics": {"spine.evaluation.run", "spine.evaluation.png",
                                 "spine.evaluation.report", "spine.evaluate"},
    "spine.evaluation.run": {"spine.evaluation.png", "spine.evaluation.report", "spine.evaluate"},
    "spine.evaluation.png": {"spine.evaluation.run", "spine.evaluation.report", "spine.evaluate"},
    "spine.evaluation.report": {"spine.evaluate"},
}  # fmt: skip


def _runtime_imports(path: Path) -> set[str]:
    """Modules a source file imports when it runs (at any depth, not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _path(module: str) -> Path:
    return SPINE.parent / (module.replace(".", "/") + ".py")


@pytest.mark.parametrize("module", sorted(LATER))
def test_an_evaluation_module_imports_nothing_after_it(module):
    assert _runtime_imports(_path(module)) & LATER[module] == set()


def test_the_checker_sees_function_level_imports_and_skips_type_checking_ones():
    report = _runtime_imports(_path("spine.evaluation.report"))
    assert "spine.evaluation.metrics" in report  # module level
    assert "mrcnn.visualize" in report  # inside a function
    assert "spine.evaluation.run" not in report  # under TYPE_CHECKING only
