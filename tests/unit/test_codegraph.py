"""Cache keys follow the code's real imports (tasks/codegraph.py): a change deep in the shared
layer re-keys exactly the tasks that reach it; unrelated modules and new data contracts do not."""

import shutil
from pathlib import Path

import pytest

from tasks.codegraph import PROJECT_ROOT, CodeGraph

PACKAGES = ("tasks", "models", "data_contracts", "flows")
TRAINING_TASKS = {
    "tasks.pretrain.steps",
    "tasks.sft.steps",
    "tasks.reward.steps",
    "tasks.rlhf.steps",
    "tasks.distill.steps",
}


@pytest.fixture()
def tree(tmp_path) -> Path:
    """A copy of the project's packages to edit."""
    for name in PACKAGES:
        shutil.copytree(
            PROJECT_ROOT / name,
            tmp_path / name,
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    return tmp_path


def task_modules(root: Path) -> list[str]:
    """Every module under tasks/ that declares a Prefect task."""
    out = []
    for path in sorted((root / "tasks").rglob("*.py")):
        if "@cached_task(" in path.read_text():
            out.append(".".join(path.relative_to(root).with_suffix("").parts))
    return out


def keys(root: Path) -> dict[str, str]:
    graph = CodeGraph(root)
    return {m: graph.code_key(m) for m in task_modules(root)}


def rekeyed(tree: Path, edit) -> set[str]:
    before = keys(tree)
    edit(tree)
    after = keys(tree)
    return {m for m in before if before[m] != after.get(m)}


def _edit(relpath: str, old: str, new: str):
    def edit(root: Path):
        path = root / relpath
        text = path.read_text()
        assert old in text, f"{old!r} not in {relpath}"
        path.write_text(text.replace(old, new, 1))

    return edit


def test_task_modules_are_found(tree):
    assert TRAINING_TASKS <= set(task_modules(tree))
    assert "tasks.corpus.steps" in task_modules(tree)


def test_changing_the_refusal_rule_rekeys_exactly_the_tasks_that_use_it(tree):
    changed = rekeyed(
        tree, _edit("tasks/judges/refusal.py", "REFUSAL_WINDOW = 300", "REFUSAL_WINDOW = 200")
    )
    # the rule annotator calls it: collection, RLHF, distillation (RM scoring module) and evaluation
    assert {"tasks.reward.steps", "tasks.rlhf.steps", "tasks.evaluate.steps"} <= changed
    # the corpus, tokenizer and pretraining never judge answers
    assert not changed & {"tasks.corpus.steps", "tasks.tokenizer.steps", "tasks.pretrain.steps"}
    graph = CodeGraph(tree)
    reaching = {m for m in task_modules(tree) if "tasks.judges.refusal" in graph.closure(m)}
    assert changed == reaching


def test_a_report_helper_does_not_rekey_the_training_tasks(tree):
    changed = rekeyed(tree, _edit("tasks/report/html.py", '"""', '"""A changed docstring. '))
    assert not changed & TRAINING_TASKS
    assert changed <= {m for m in task_modules(tree) if m.startswith("tasks.report")}


def test_adding_a_data_contract_rekeys_no_task(tree):
    def add_contract(root: Path):
        src = (root / "data_contracts" / "rlhf_eval.py").read_text()
        (root / "data_contracts" / "brand_new.py").write_text(src.replace("rlhf_eval", "brand_new"))
        init = root / "data_contracts" / "__init__.py"
        init.write_text(
            init.read_text().replace("    rlhf_eval,\n", "    rlhf_eval,\n    brand_new,\n")
        )

    assert rekeyed(tree, add_contract) == set()


def test_a_contract_rekeys_the_tasks_that_read_or_write_it(tree):
    changed = rekeyed(tree, _edit("data_contracts/sft_dialogues.py", '"""', '"""Changed. '))
    assert "tasks.sft.steps" in changed
    assert not changed & {"tasks.pretrain.steps", "tasks.tokenizer.steps", "tasks.corpus.steps"}


def test_a_shipped_data_file_rekeys_the_modules_that_name_it(tree):
    changed = rekeyed(
        tree,
        lambda root: (root / "tasks/sft/data/borderline.yaml").write_text(
            (root / "tasks/sft/data/borderline.yaml").read_text() + "\n# edited\n"
        ),
    )
    assert "tasks.sft.steps" in changed
    assert not changed & {"tasks.pretrain.steps", "tasks.rlhf.steps", "tasks.corpus.steps"}


def test_relative_and_function_level_imports_are_followed(tmp_path):
    pkg = tmp_path / "tasks" / "demo"
    pkg.mkdir(parents=True)
    (tmp_path / "tasks" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def f():\n    from .b import g\n    return g()\n")
    (pkg / "b.py").write_text("from tasks.demo import c\n")
    (pkg / "c.py").write_text("X = 1\n")
    graph = CodeGraph(tmp_path)
    assert {"tasks.demo.a", "tasks.demo.b", "tasks.demo.c", "tasks.demo", "tasks"} == graph.closure(
        "tasks.demo.a"
    )
    before = graph.code_key("tasks.demo.a")
    (pkg / "c.py").write_text("X = 2\n")
    assert CodeGraph(tmp_path).code_key("tasks.demo.a") != before
