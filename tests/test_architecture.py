"""The shape of the package itself: no import circles, imports at the top, small modules, a torch-free planner."""

import ast
import os
import subprocess
import sys

from import_graph import MODULES, PACKAGE, REPO, find_cycles, import_graph, imports_of


MAX_MODULE_LINES = 500
# The model's two files travel next to every checkpoint and must stand alone (one model per file, as in
# transformers' modeling files); they are sized by that rule, not by this one.
STANDALONE = {"nanochat_hf.configuration_nanochat_hf", "nanochat_hf.modeling_nanochat_hf"}
# What the planner may import at module level: the standard library and these modules of ours.
PLANNING_MAY_IMPORT = ("nanochat_hf.planning", "nanochat_hf.defaults", "nanochat_hf.errors", "nanochat_hf.atomic")


def test_the_cycle_finder_finds_a_circle():
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    assert find_cycles(import_graph()) == []


def test_own_imports_are_at_the_top_unless_a_comment_says_why():
    """A function-level import of our own modules needs a comment on its line or just above it."""
    files = list(MODULES.items()) + [(p.stem, p) for p in sorted((REPO / "recipes").glob("*.py"))]
    files += [(p.stem, p) for p in sorted((REPO / "benchmarks").glob("*.py"))]
    hidden = []
    for name, path in files:
        lines = path.read_text(encoding="utf-8").splitlines()
        for target, lineno, in_function in imports_of(name, path):
            explained = "#" in lines[lineno - 1] or lines[lineno - 2].strip().startswith("#")
            if in_function and not explained:
                hidden.append(f"{path.relative_to(REPO)}:{lineno} imports {target} inside a function")
    assert hidden == []


def test_no_module_is_over_500_lines():
    long = {
        name: lines
        for name, path in MODULES.items()
        if name not in STANDALONE and (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_planning_imports_only_the_standard_library_and_itself():
    stdlib = sys.stdlib_module_names
    for name, path in MODULES.items():
        if not name.startswith("nanochat_hf.planning"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in tree.body:  # module level only: a function may look at torch's device (and says so)
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""] if not node.level else ["nanochat_hf.planning"]
            else:
                continue
            for module in modules:
                ours = module.startswith(PLANNING_MAY_IMPORT)
                assert ours or module.split(".")[0] in stdlib, f"{name} imports {module}"


def test_planning_runs_without_torch_or_transformers():
    """Load the planner without running nanochat_hf/__init__.py (which registers the model with
    transformers): making a plan and its report must not import torch or transformers."""
    script = f"""
import sys, types
package = types.ModuleType("nanochat_hf")
package.__path__ = [{str(PACKAGE)!r}]
sys.modules["nanochat_hf"] = package
from nanochat_hf.commands.plan import run  # noqa: F401 (the CLI command imports the whole planner)
from nanochat_hf.planning.plan import make_plan
from nanochat_hf.planning.report import render_plan
from nanochat_hf.planning.finetune import plan_finetune
text = render_plan(make_plan(32, "rtx4070"))
plan_finetune(32, "qlora")
assert "1,879,048,192" in text
heavy = sorted(m for m in ("torch", "transformers", "trl", "accelerate") if m in sys.modules)
print(",".join(heavy) or "none")
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env={**os.environ}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "none"
