"""The house rules, derived from the code itself: every DVC stage depends on every project module it
imports (so `dvc repro` never reuses results of changed code), and no stage imports another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pipeline"
STAGES = ("download", "prepare", "train", "evaluate", "generate", "compare")
DVC_STAGES = ("download", "prepare", "train", "evaluate")


def direct_imports(module: str) -> set[str]:
    """Project modules (`pipeline.x`) named by any import statement in the module, also inside
    functions (deferred imports run too)."""
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pipeline import x` names module pipeline.x; `from pipeline.x import y` pipeline.x
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if (ROOT / (n.replace(".", "/") + ".py")).exists()}
    return found - {module}


def imports_closure(module: str) -> set[str]:
    seen, todo = {module}, [module]
    while todo:
        for dep in direct_imports(todo.pop()) - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def module_path(module: str) -> str:
    return module.replace(".", "/") + ".py"


def test_the_closure_follows_imports_transitively() -> None:
    closure = imports_closure("pipeline.train")
    # train -> model -> fused_adam, and train -> checkpoint -> atomic: two hops each
    assert {"pipeline.model", "pipeline.fused_adam", "pipeline.checkpoint", "pipeline.atomic"} <= (
        closure
    )
    assert "pipeline.prepare" not in closure


def test_training_does_not_import_the_evaluation() -> None:
    """Sweep jobs are evaluated by the sweep callback, so a change to FID code retrains nothing."""
    closure = imports_closure("pipeline.train")
    assert not {"pipeline.evaluation", "pipeline.metrics"} & closure


@pytest.mark.parametrize("stage", DVC_STAGES)
def test_each_dvc_stage_depends_on_every_module_it_imports(stage: str) -> None:
    deps = set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["deps"])
    needed = {module_path(m) for m in imports_closure(f"pipeline.{stage}")}
    missing = sorted(needed - deps)
    assert not missing, f"dvc.yaml stage {stage!r} misses deps {missing}: add them"
    stale = sorted(d for d in deps if d.startswith("pipeline/") and d not in needed)
    assert not stale, f"dvc.yaml stage {stage!r} lists {stale}, which it does not import"


@pytest.mark.parametrize("stage", STAGES)
def test_no_stage_imports_another_stage(stage: str) -> None:
    others = {f"pipeline.{s}" for s in STAGES} - {f"pipeline.{stage}"}
    reached = imports_closure(f"pipeline.{stage}") & others
    assert not reached, f"pipeline.{stage} imports the stage(s) {sorted(reached)}"


def test_no_module_is_a_junk_drawer() -> None:
    for path in PACKAGE.glob("*.py"):
        lines = len(path.read_text().splitlines())
        assert lines <= 400, f"{path.name} has {lines} lines: split it by job"
    assert not (PACKAGE / "utils.py").exists()
