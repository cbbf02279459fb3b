"""The house's shape as a contract: floors import only downward, nothing imports in a circle or
late to dodge one, the queue protocol's keys are spelled once, and no room grows a giant.

The floors are written down in pyproject.toml ([tool.importlinter]) and docs/architecture.md;
import-linter checks them here against the real import graph (function-level imports included).
The lab (crosslink/lab: whole deployments for the demo, chaos and the benchmark) and tests/ are
held to the import rules only, not to the size limits.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("crosslink", "producers", "workers", "schemas", "planfix")
LAB = ROOT / "crosslink" / "lab"
# A product module past this many lines holds more than one concern (issue 20's measure).
MAX_MODULE_LINES = 600
# A function past this many lines does more than one step; name the steps.
MAX_FUNCTION_LINES = 60
# The queue protocol's keys, each spelled only in crosslink/queue/names.py.
QUEUE_KEY_PREFIXES = ("crosslink:pending:", "crosslink:pending-since:", "crosslink:hints:", "crosslink:dirty:",
                      "crosslink:batch:", "crosslink:claims:", "crosslink:batch-due:", "crosslink:recent:",
                      "crosslink:resume:", "crosslink:lock:", "crosslink:severed:", "crosslink:workers:heartbeat")
QUEUE_NAMES = ROOT / "crosslink" / "queue" / "names.py"
LINT_IMPORTS = ("import sys; from importlinter.cli import lint_imports; "
                "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")


def product_modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def _in_lab(path: Path) -> bool:
    return LAB in path.parents


def test_the_floors_and_no_circles_hold_as_pyproject_writes_them():
    """import-linter in a process of its own (it configures logging and sys.path as it goes)."""
    checked = subprocess.run([sys.executable, "-c", LINT_IMPORTS], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _late_imports(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, module) of each import of ours made inside a function."""
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(function):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in PACKAGES:
                found.append((node.lineno, node.module))
            elif isinstance(node, ast.Import):
                found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] in PACKAGES]
    return found


def test_no_module_of_ours_is_imported_inside_a_function():
    """A late import hides a cycle the floors would forbid, or a floor's dependency nobody sees."""
    late = {str(path.relative_to(ROOT)): found for path in product_modules()
            if (found := _late_imports(ast.parse(path.read_text(encoding="utf-8"))))}
    assert late == {}


def test_no_product_module_or_function_is_a_giant():
    too_long = []
    for path in product_modules():
        if _in_lab(path):
            continue
        text = path.read_text(encoding="utf-8")
        name = str(path.relative_to(ROOT))
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    assert too_long == []


@pytest.mark.parametrize("prefix", QUEUE_KEY_PREFIXES)
def test_each_queue_key_is_spelled_in_one_module(prefix):
    spelled = [str(path.relative_to(ROOT)) for path in product_modules()
               if path != QUEUE_NAMES and re.search(re.escape(prefix), _code_of(path))]
    assert spelled == []
    assert prefix in QUEUE_NAMES.read_text(encoding="utf-8")


def _code_of(path: Path) -> str:
    """PATH's string constants that are not docstrings: where a key would be spelled in code."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return "\n".join(node.value for node in ast.walk(tree)
                     if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings)
