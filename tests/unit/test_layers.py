"""The stage packages sit side by side over one shared layer: a stage imports another stage only
where data flows between them (RLHF refreshes the reward models; the reward stage collects
preference pairs). Walks the static imports of every module under tasks/."""

from pathlib import Path

from tasks.codegraph import PROJECT_ROOT, CodeGraph

SHARED = {"chat", "judges", "training", "data", "distributed", "annotation"}  # under every stage
STAGES = {
    "corpus",
    "tokenizer",
    "pretrain",
    "sft",
    "preferences",
    "reward",
    "rlhf",
    "distill",
    "evaluate",
    "report",
}
DATA_LINKS = {("rlhf", "reward"), ("reward", "preferences")}


def _modules(package: str) -> list[str]:
    out = []
    for path in sorted((PROJECT_ROOT / "tasks" / package).rglob("*.py")):
        parts = path.relative_to(PROJECT_ROOT).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def _package_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "tasks" and len(parts) > 1 else None


def test_every_package_under_tasks_is_a_stage_or_shared():
    packages = {p.name for p in (PROJECT_ROOT / "tasks").iterdir() if (p / "__init__.py").exists()}
    assert packages == SHARED | STAGES, "a new package must be declared a stage or shared here"


def test_stages_import_only_shared_packages_and_their_data_links():
    graph = CodeGraph()
    edges = {}
    for package in SHARED | STAGES:
        for module in _modules(package):
            for imported in graph.info(module).imports:
                target = _package_of(imported)
                if target in STAGES and target != package:
                    edges.setdefault((package, target), []).append(f"{module} -> {imported}")
    unexpected = {k: v for k, v in edges.items() if k not in DATA_LINKS}
    assert not unexpected, f"stage-to-stage imports outside the data links: {unexpected}"
    shared_to_stage = {k: v for k, v in edges.items() if k[0] in SHARED}
    assert not shared_to_stage, f"the shared layer must not import a stage: {shared_to_stage}"


def test_imports_run_one_way_models_and_contracts_never_import_tasks_or_flows():
    graph = CodeGraph()
    for path in sorted(Path(PROJECT_ROOT, "models").glob("*.py")) + sorted(
        Path(PROJECT_ROOT, "data_contracts").glob("*.py")
    ):
        module = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts).removesuffix(
            ".__init__"
        )
        bad = [m for m in graph.info(module).imports if m.split(".")[0] in ("tasks", "flows")]
        assert not bad, f"{module} imports {bad}"
