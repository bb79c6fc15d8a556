"""The real pipeline flow on the tiny preset: Prefect (ephemeral API) + MLflow (SQLite store),
read back through their clients. Also: caching on a second run, and --rerun semantics."""

import json
import math
from pathlib import Path
from uuid import UUID

import polars as pl
import pytest
import torch
from mlflow import MlflowClient

from flows.dag import EDGES, skipped_by_choice, skipped_tasks
from flows.pipeline import pipeline_flow
from tasks import promotion
from tasks.config import load_config
from tasks.hashing import sha256_of
from tasks.tracking import experiment_name, tracking_uri
from tasks.training.model_io import HEAD_FILE, load_model, load_reward_model

pytestmark = pytest.mark.e2e


def _task_states(flow_run_id: str) -> dict[str, str]:
    """Final state of each task run of a flow run and of its subflow runs (the shard map), as
    Prefect's API reports it. A task mapped over shards shows its distinct states joined."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[UUID(flow_run_id)])
            )
        )
        flow_ids = [UUID(flow_run_id)] + [c.id for c in children]
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": flow_ids}))
    states: dict[str, set[str]] = {}
    for r in runs:
        if r.name.startswith("corpus-shard-filters"):  # the subflow's own wrapper task run
            continue
        states.setdefault(r.name.rsplit("-", 1)[0], set()).add(r.state.name)
    return {name: "+".join(sorted(s)) for name, s in states.items()}


@pytest.fixture(scope="module")
def first_run(run_dir):
    return pipeline_flow(preset="tiny")


def test_mlflow_holds_parent_and_nested_stage_runs(first_run, run_dir):
    cfg = load_config("tiny")
    client = MlflowClient(tracking_uri(cfg.run_dir))
    parent = client.get_run(first_run.mlflow_run_id)
    assert parent.info.run_name.startswith("pipeline tiny ")
    assert parent.info.status == "FINISHED"
    experiment = client.get_experiment_by_name(experiment_name("tiny"))
    children = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    by_name = {r.info.run_name: r for r in children}
    assert set(by_name) == {
        "corpus",
        "tokenizer",
        "pretrain",
        "sft",
        "reward",
        "rlhf",
        "distill",
        "evaluate",
    }

    corpus = by_name["corpus"]
    m, p = corpus.data.metrics, corpus.data.params
    assert p["corpus.toxicity.sample_frac"] == "0.1"
    assert m["rows_in"] == m["rows_kept"] + m["rows_excluded"] + m["rows_quarantined"]
    assert m["rows_kept"] > 0 and m["rows_excluded"] > 0
    assert 0.0 <= m["toxicity.share_toxic"] <= 1.0
    assert any(k.startswith("excluded.quality_") for k in m)
    assert corpus.data.tags["prefect.flow_run_id"] == first_run.corpus.flow_run_id
    artifacts = {a.path for a in client.list_artifacts(corpus.info.run_id, "toxicity")}
    assert "toxicity/toxicity_histogram.png" in artifacts
    tables = {a.path for a in client.list_artifacts(corpus.info.run_id, "tables")}
    assert {"tables/excluded_reasons.csv", "tables/demographics.csv"} <= tables
    inputs = {d.dataset.name for d in corpus.inputs.dataset_inputs}
    assert {"raw_documents", "documents", "quarantine"} <= inputs

    tok = by_name["tokenizer"]
    assert tok.data.metrics["eval.roundtrip_failures"] == 0
    assert tok.data.metrics["eval.bytes_per_token"] > 1.5
    tok_artifacts = {a.path for a in client.list_artifacts(tok.info.run_id, "tokenizer")}
    assert "tokenizer/tokenizer.model" in tok_artifacts

    pre = by_name["pretrain"]
    history = client.get_metric_history(pre.info.run_id, "loss")
    assert len(history) >= 3 and history[-1].step == 30
    assert history[-1].value < history[0].value  # it learns
    assert "val_loss" in pre.data.metrics and "mfu" in pre.data.metrics
    assert pre.data.params["pretrain.train.max_steps"] == "30"
    names = {a.path for a in client.list_artifacts(pre.info.run_id)}
    assert "loss_curve.png" in names and "models" in names  # models/<registered name>/<digest>
    assert any(n.startswith("samples") for n in names), names
    versions = client.search_model_versions("name = 'llama2-recipe-pretrained'")
    assert any(v.run_id == pre.info.run_id for v in versions)

    sft = by_name["sft"]
    m = sft.data.metrics
    assert m["curate.dialogues_in"] == m["collect.dialogues"]
    assert m["curate.dialogues_in"] == m["curate.dialogues_kept"] + m["curate.dialogues_excluded"]
    for source in ("chitchat", "tasks", "donotanswer", "borderline"):
        assert m[f"curate.kept.{source}"] > 0, source
    assert m["collect.donotanswer.prompts_in"] == 939  # every DoNotAnswer prompt accounted for
    assert m["tokenize.examples"] > 0 and m["tokenize.target_tokens"] < m["tokenize.tokens"]
    curve = client.get_metric_history(sft.info.run_id, "base/loss")
    assert len(curve) >= 2 and curve[-1].value < curve[0].value
    assert sft.data.params["sft.format.mask_strategy"] == "all_assistant"
    names = {a.path for a in client.list_artifacts(sft.info.run_id, "evaluation")}
    assert {"evaluation/multiturn_recall.png", "evaluation/sample_chats.md"} <= names
    tables = {a.path for a in client.list_artifacts(sft.info.run_id, "tables")}
    assert "tables/multiturn_recall.csv" in tables
    assert {"sft_dialogues", "sft_examples"} <= {d.dataset.name for d in sft.inputs.dataset_inputs}
    versions = client.search_model_versions("name = 'llama2-recipe-sft'")
    assert any(v.run_id == sft.info.run_id for v in versions)
    # the tiny model follows no instruction, so GAtt keeps nothing and says so
    if m["gatt.examples"] == 0:
        assert "without Ghost Attention" in sft.data.tags["gatt.result"]

    reward = by_name["reward"]
    m = reward.data.metrics
    assert m["collect.pairs"] > 0
    assert m["collect.pairs"] + m["collect.excluded"] == m["collect.prompts"]  # nothing lost
    assert 0 <= m["eval.safety_rm.safety.avg"] <= 100
    for rm in ("helpfulness", "safety"):
        assert m[f"rm_{rm}.steps"] == 6 and f"rm_{rm}/loss" in m
        versions = client.search_model_versions(f"name = 'llama2-recipe-rm-{rm}'")
        assert any(v.run_id == reward.info.run_id for v in versions), rm
    names = {a.path for a in client.list_artifacts(reward.info.run_id, "evaluation")}
    assert {
        "evaluation/table8.csv",
        "evaluation/calibration_safety.png",
        "evaluation/margin_ablation.csv",
    } <= names
    tables = {a.path for a in client.list_artifacts(reward.info.run_id, "tables")}
    assert {"tables/table8_accuracy_by_level.csv", "tables/margin_ablation.csv"} <= tables
    assert "preference_pairs" in {d.dataset.name for d in reward.inputs.dataset_inputs}

    rlhf = by_name["rlhf"]
    rounds = {
        r.info.run_name: r
        for r in client.search_runs(
            [experiment.experiment_id], f"tags.mlflow.parentRunId = '{rlhf.info.run_id}'"
        )
    }
    assert set(rounds) == {"rlhf-v1", "rlhf-v2", "rlhf-v3"}  # one nested run per round
    for name, run in rounds.items():
        m = run.data.metrics
        assert run.info.status == "FINISHED" and m["rs.prompts"] > 0
        # Fig. 7: the mean of each prompt's max over its first N samples cannot fall with N
        assert m["rs.fig7.max_at_1"] <= m["rs.fig7.max_at_3"] + 1e-12
        # the pick by the rule annotator: between the worst and the best it could have been
        for axis in ("helpfulness", "safety"):
            pick, best = m[f"rs.annotator.{axis}.pick"], m[f"rs.annotator.{axis}.best"]
            assert 0 <= pick <= best <= 1 and m[f"rs.annotator.{axis}.sample"] <= best
        assert {"rejection_sampling/fig7_rejection_sampling_" + name.split("-")[1] + ".png"} <= {
            a.path for a in client.list_artifacts(run.info.run_id, "rejection_sampling")
        }
        assert "rejection_samples" in {d.dataset.name for d in run.inputs.dataset_inputs}
        refreshed = any(k.endswith("_rm_helpfulness.steps") for k in m)
        assert refreshed == (name != "rlhf-v1")  # V1 uses the reward stage's RMs
    assert rounds["rlhf-v3"].data.metrics["rs.pooled_rows"] > 0  # rs_pool_from 3
    # rlhf.multi_turn_share: some adversarial prompts were sampled after a chit-chat exchange
    samples = pl.concat(
        pl.read_parquet(f) for f in (cfg.data_dir / "rejection_samples").rglob("*.parquet")
    )
    multi = samples.filter(pl.col("prompt_id").str.contains(">"))
    assert multi.height > 0 and multi["risk_category"].is_not_null().all()
    assert (multi["prompt"].list.len() == 3).all()  # user, assistant, the request
    assert (
        "rs.pooled_rows" in rounds["rlhf-v2"].data.metrics
        and rounds["rlhf-v2"].data.metrics["rs.pooled_rows"] == 0
    )
    ppo = rounds["rlhf-v3"].data.metrics
    # k1 is an unbiased per-sample estimate of the KL: its batch mean may dip below 0
    assert (
        ppo["ppo.iterations_run"] >= 1 and math.isfinite(ppo["ppo/kl"]) and ppo["ppo/entropy"] > 0
    )
    assert not any(k.startswith("ppo") for k in rounds["rlhf-v2"].data.metrics)  # ppo_from 3
    versions = client.search_model_versions("name = 'llama2-recipe-rlhf'")
    assert {r.info.run_id for r in rounds.values()} <= {v.run_id for v in versions}
    # rlhf.average_last 2: the mean of V2 and V3, registered by the stage's own run, is the
    # policy distillation starts from
    (averaged,) = [v for v in versions if v.run_id == rlhf.info.run_id]
    assert averaged.description.startswith("# Model card: rlhf-avg")  # its card, with lineage
    assert "the uniform mean of the weights of the last 2 rounds' models" in averaged.description
    avg_dir = first_run.rlhf.models["rlhf-avg"]
    assert first_run.rlhf.model_dir == avg_dir and "/avg-" in avg_dir
    avg_config = json.loads((Path(avg_dir) / "config.json").read_text())
    assert [a["version"] for a in avg_config["averaged_from"]] == ["rlhf-v2", "rlhf-v3"]
    assert by_name["distill"].data.params["policy"] == avg_dir
    m = rlhf.data.metrics
    assert m["eval.sft.kl_to_sft"] == 0 and m["eval.final.kl_to_sft"] > 0
    assert m["eval.sft.helpfulness_win_rate"] == 0.5  # SFT against itself: all ties
    tables = {a.path for a in client.list_artifacts(rlhf.info.run_id, "tables")}
    assert "tables/rlhf_rounds.csv" in tables
    assert "rlhf_eval" in {d.dataset.name for d in rlhf.inputs.dataset_inputs}

    distill = by_name["distill"]
    m = distill.data.metrics
    assert (
        m["distill.rows"] + m["distill.prompts_too_long"] == 8
    )  # every drawn prompt accounted for
    assert m["distill.kept"] + m["distill.dropped"] == m["distill.rows"]
    assert "distillation_samples" in {d.dataset.name for d in distill.inputs.dataset_inputs}
    versions = client.search_model_versions("name = 'llama2-recipe-distilled'")
    assert any(v.run_id == distill.info.run_id for v in versions)
    if m["distill.kept"] == 0:  # the tiny model rarely profits from a preprompt: it says so
        assert "kept none" in distill.data.tags["distill.result"]
    # distill.trim_cut_off (tiny preset): a trimmed answer ends a sentence and counts as ended
    (samples_file,) = (cfg.data_dir / "distillation_samples").rglob("*.parquet")
    samples = pl.read_parquet(samples_file)
    trimmed = samples.filter(pl.col("trimmed_with"))
    assert trimmed.height == m["distill.trimmed"]
    assert trimmed["ended_with"].all()
    assert trimmed["answer_with"].str.contains(r"[.!?][\"')\]]*$").all()

    evaluation = by_name["evaluate"]
    m = evaluation.data.metrics
    versions = evaluation.data.params["versions"].split(",")
    assert versions[:6] == ["pretrained", "sft", "rlhf-v1", "rlhf-v2", "rlhf-v3", "rlhf-avg"]
    for version in versions:  # every version answered the same prompts and was judged
        assert m[f"{version}.answers"] > 0
        assert 0 <= m[f"{version}.violation_rm_pct"] <= 100
        assert 0 <= m[f"{version}.false_refusal_borderline_pct"] <= 100
        assert f"{version}.truthful_pct" in m and f"{version}.toxic_pct" in m
    assert m["sft.win_vs_sft_annotator_pct"] == 50  # SFT against itself: all ties
    tables = {a.path for a in client.list_artifacts(evaluation.info.run_id, "tables")}
    assert {
        "tables/evaluation.csv",
        "tables/violation_by_category.csv",
        "tables/red_team.csv",
    } <= tables
    assert "eval_results" in {d.dataset.name for d in evaluation.inputs.dataset_inputs}
    # every version's registered model carries its model card, with its evaluation row
    cards = first_run.model_cards
    assert set(versions) <= set(cards)
    name, number = cards["rlhf-v3"].split("/")
    card = client.get_model_version(name, number).description
    assert (
        card.startswith("# Model card: rlhf-v3")
        and "violation_rm_%" in card
        and "Known limits" in card
    )
    # the promotion gate: the final version's row against tiny's thresholds decides the aliases
    final = promotion.final_version(versions)
    (row,) = pl.read_csv(first_run.evaluate.table).filter(pl.col("version") == final).to_dicts()
    passed = all(c.passed for c in promotion.check_thresholds(row, cfg.promotion.thresholds))
    tags = evaluation.data.tags
    assert tags["promotion.version"] == final
    assert tags["promotion.thresholds"] == ("passed" if passed else "failed")
    assert m["promotion.passed"] == float(passed)
    name, number = tags["promotion.model_version"].split("/")
    assert name == promotion.registered_name(cfg, final)
    aliases = set(client.get_model_version(name, number).aliases)
    assert aliases == ({"candidate", "champion"} if passed else set()), (row, aliases)


def test_the_run_report_opens_in_a_browser_with_every_stage(first_run, tmp_path):
    """The pipeline ends with one HTML report (a file and an MLflow artifact of the parent run);
    headless Chromium renders it and the DOM holds every stage and the run's own numbers."""
    import shutil
    import subprocess

    from tests.e2e.test_services import CHROMIUM_FLAGS

    report = Path(first_run.report)
    assert report.exists() and report.suffix == ".html"
    client = MlflowClient(tracking_uri(load_config("tiny").run_dir))
    assert f"report/{report.name}" in {
        a.path for a in client.list_artifacts(first_run.mlflow_run_id, "report")
    }
    binary = shutil.which("chromium")
    assert binary, "chromium is not installed: `make test` installs it (make browser)"
    dom = subprocess.run(
        [
            binary,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'p1'}",
            "--dump-dom",
            report.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    for stage in (
        "corpus",
        "tokenizer",
        "pretrain",
        "sft",
        "reward",
        "rlhf",
        "distill",
        "evaluate",
    ):
        assert f">{stage}<" in dom, stage
    rows_kept = client.get_run(first_run.corpus.mlflow_run_id).data.metrics["rows_kept"]
    assert f"{int(rows_kept)}" in dom
    assert "rlhf rounds" in dom and "table8 accuracy by level" in dom and "evaluation" in dom
    shot = Path(__file__).resolve().parents[2] / "test-artifacts" / "run-report.png"
    shot.parent.mkdir(exist_ok=True)
    subprocess.run(
        [
            binary,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={tmp_path / 'p2'}",
            f"--screenshot={shot}",
            "--window-size=1280,2400",
            report.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 20_000


def _same_weights(a: Path, b: Path) -> bool:
    """Two model folders (ours or Hugging Face exports) hold the same tensors, compared through
    the name mapping by loading both with the recipe's loaders."""
    load = load_reward_model if (Path(a) / HEAD_FILE).exists() else load_model
    left, right = load(a).state_dict(), load(b).state_dict()
    return left.keys() == right.keys() and all(torch.equal(left[k], right[k]) for k in left)


def test_every_registered_version_loads_the_weights_its_task_trained(first_run, tmp_path):
    """Each model version of the run, downloaded through the registry (models:/name/version),
    is a Hugging Face export (transformers' architecture in config.json, the chat template in
    tokenizer_config.json) of the folder its task trained: no version shares or loses its folder
    to a later registration (before, all of one run's versions pointed at `<run>/model`)."""
    import mlflow

    uri = tracking_uri(load_config("tiny").run_dir)
    client = MlflowClient(uri)
    run_of = {stage: out.mlflow_run_id for stage, out in first_run.stages().items()}
    experiment = client.get_run(run_of["rlhf"]).info.experiment_id
    rounds = {
        r.info.run_name: r.info.run_id
        for r in client.search_runs([experiment], f"tags.mlflow.parentRunId = '{run_of['rlhf']}'")
    }
    last = max(rounds)
    expected = {  # (registered model, MLflow run that registered it) -> folder the task trained
        ("llama2-recipe-pretrained", run_of["pretrain"]): first_run.pretrain.model_dir,
        ("llama2-recipe-sft", run_of["sft"]): first_run.sft.model_dir,
        ("llama2-recipe-distilled", run_of["distill"]): first_run.distill.model_dir,
        **{
            (f"llama2-recipe-rm-{rm}", run_of["reward"]): first_run.reward.reward_models[rm]
            for rm in ("helpfulness", "safety")
        },
        **{
            (f"llama2-recipe-rm-{rm}", rounds[last]): first_run.rlhf.reward_models[rm]
            for rm in ("helpfulness", "safety")
        },
        **{
            ("llama2-recipe-rlhf", run_id): first_run.rlhf.models[name]
            for name, run_id in rounds.items()
        },
    }
    ours = set(run_of.values()) | set(rounds.values())
    names = {name for name, _ in expected}
    versions = [
        mv
        for name in names
        for mv in client.search_model_versions(f"name = '{name}'")
        if mv.run_id in ours
    ]
    assert {(mv.name, mv.run_id) for mv in versions} >= set(expected)
    assert len({mv.source for mv in versions}) == len(versions)  # one folder per version
    for mv in versions:
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"models:/{mv.name}/{mv.version}",
                dst_path=str(tmp_path / mv.name / str(mv.version)),
                tracking_uri=uri,
            )
        )
        reward = "-rm-" in mv.name
        config = json.loads((local / "config.json").read_text())
        assert config["architectures"] == [
            "LlamaForSequenceClassification" if reward else "LlamaForCausalLM"
        ], mv.name
        assert "chat_template" in json.loads((local / "tokenizer_config.json").read_text())
        assert _same_weights(local, Path(mv.tags["trained_folder"])), (mv.name, mv.version)
        if (mv.name, mv.run_id) in expected:
            trained = Path(expected[(mv.name, mv.run_id)])
            assert mv.tags["weights_sha256"] == sha256_of(trained / "model.safetensors")
            assert _same_weights(local, trained), (mv.name, mv.version, trained)
    reward = run_of["reward"]
    assert not _same_weights(
        first_run.reward.reward_models["helpfulness"], first_run.reward.reward_models["safety"]
    )
    helpful, safe = (
        next(mv for mv in versions if mv.name == f"llama2-recipe-rm-{rm}" and mv.run_id == reward)
        for rm in ("helpfulness", "safety")
    )
    assert helpful.tags["weights_sha256"] != safe.tags["weights_sha256"]


def _gatt_skipped(result) -> bool:
    return "sft.train_gatt" not in result.sft.states


def test_first_run_executes_every_task(first_run):
    states = {k: v for stage in first_run.stages().values() for k, v in stage.states.items()}
    # train_gatt runs only when GAtt sampling kept a dialogue (the tiny model keeps none)
    skipped = {"sft.train_gatt"} if _gatt_skipped(first_run) else set()
    # likewise distill_finetune runs only when distillation kept an answer
    if "distill.distill_finetune" not in first_run.distill.states:
        skipped.add("distill.distill_finetune")
    # mapped tasks are recorded as name/i, an RLHF round's as name:v<r>
    # and the base-model import runs only when the config names a base model
    skipped |= set(skipped_tasks(base_model=False))
    # and the tiny preset's choices: the rule annotator labels, PPO is the rounds' policy step,
    # V2 and V3 are averaged
    skipped |= set(skipped_by_choice(annotator="rule", method="ppo", averaged_rounds=2))
    assert {name.split("/")[0].split(":")[0] for name in states} == set(EDGES) - skipped
    assert set(states.values()) == {"Completed"}


def test_second_run_is_fully_cached_and_rerun_forces_only_downstream(first_run):
    second = pipeline_flow(preset="tiny")
    for stage in (
        "corpus",
        "tokenizer",
        "pretrain",
        "sft",
        "reward",
        "rlhf",
        "distill",
        "evaluate",
    ):
        api_states = _task_states(getattr(second, stage).flow_run_id)
        assert api_states and set(api_states.values()) == {"Cached"}, api_states
    assert second.corpus.outputs == first_run.corpus.outputs

    third = pipeline_flow(preset="tiny", rerun=["corpus.quality"])
    corpus = _task_states(third.corpus.flow_run_id)
    assert corpus["ingest"] == "Cached" and corpus["pii"] == "Cached"
    for name in (
        "quality",
        "merge_shards",
        "exact_dedup",
        "near_dedup",
        "weights",
        "toxicity",
        "demographics",
    ):
        assert corpus[name] == "Completed", (name, corpus)
    for stage in ("tokenizer", "pretrain"):
        assert set(_task_states(getattr(third, stage).flow_run_id).values()) == {"Completed"}
    # a forced training task trains again from step 0 (before: it resumed its own final
    # checkpoint and trained 0 steps); the earlier output is set aside, not deleted
    pretrain = (
        MlflowClient(tracking_uri(load_config("tiny").run_dir))
        .get_run(third.pretrain.mlflow_run_id)
        .data.metrics
    )
    assert pretrain["train.start_step"] == 0 and pretrain["train.steps"] == 30
    trained = Path(third.pretrain.model_dir).parent
    assert list(trained.parent.glob(f"{trained.name}.set-aside-*"))
    sft = _task_states(third.sft.flow_run_id)
    assert sft["collect_dialogues"] == sft["curate"] == "Cached"  # they do not read the corpus
    assert sft["tokenize"] == sft["train_base"] == sft["evaluate"] == "Completed"
    for stage in ("reward", "rlhf", "distill"):
        assert set(_task_states(getattr(third, stage).flow_run_id).values()) == {"Completed"}
    evaluate = _task_states(third.evaluate.flow_run_id)
    assert evaluate.pop("eval_prompts") == "Cached"  # drawn from the curated dialogues only
    assert evaluate and set(evaluate.values()) == {"Completed"}
    # forced tasks are deterministic: same data, same content-addressed files
    assert third.corpus.outputs == first_run.corpus.outputs


def test_an_rlhf_run_stopped_in_its_last_round_resumes_there(first_run, monkeypatch):
    """PPO (round 3 only) fails; the run again resumes at round 3's PPO: everything before it,
    rounds 1 and 2 and round 3's refresh and rejection sampling, is a cache hit."""
    from flows._runner import FAULT_ENV, InjectedFault
    from flows.rlhf import rlhf_flow

    overrides = ["rlhf.ppo.iterations=3"]  # a PPO setting only: nothing before PPO changes
    monkeypatch.setenv(FAULT_ENV, "rlhf.ppo")
    with pytest.raises(InjectedFault):
        rlhf_flow(preset="tiny", overrides=overrides)
    monkeypatch.delenv(FAULT_ENV)
    resumed = rlhf_flow(preset="tiny", overrides=overrides)
    states = resumed.states
    before_ppo = {
        k: v
        for k, v in states.items()
        if not k.startswith(
            (
                "rlhf.ppo",
                "rlhf.register_round:v3",
                "rlhf.average_rounds",
                "rlhf.register_round:avg",
                "rlhf.evaluate_rounds",
            )
        )
    }
    assert len(before_ppo) == 10 and set(before_ppo.values()) == {"Cached"}, states
    assert states["rlhf.ppo:v3"] == "Completed" and states["rlhf.evaluate_rounds"] == "Completed"
    # the mean of V2 and V3 follows the new V3 (tiny: rlhf.average_last 2)
    assert states["rlhf.average_rounds:avg"] == "Completed"
    assert resumed.models["rlhf-v2"] == first_run.rlhf.models["rlhf-v2"]
