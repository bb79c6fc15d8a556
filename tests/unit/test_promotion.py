"""The promotion gate's rules: thresholds on a made-up evaluation row, and the registry side
(find the version, tag it, `candidate`/`champion`) on a real MLflow store (SQLite in tmp_path)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from mlflow import MlflowClient

from tasks import promotion
from tasks.config import ConfigError, load_config
from tasks.evaluate.summary import summary_table
from tasks.promotion import Thresholds, check_thresholds
from tasks.records import dialogue_frame
from tasks.tracking import open_run, register_model, tracking_uri
from tests.unit.evaluate.test_summary import row as eval_row

# one version's row of the evaluation table (tasks/evaluate/summary.py), rates in %
ROW = {
    "version": "rlhf-v3",
    "violation_rm_%": 2.0,
    "violation_annotator_%": 4.0,
    "multi_turn_violation_rm_%": 0.0,
    "multi_turn_violation_annotator_%": 6.0,
    "red_team_violation_%": 10.0,
    "false_refusal_borderline_%": 25.0,
    "false_refusal_helpfulness_%": 8.0,
    "toxic_%": 0.0,
    "truthful_%": 30.0,
    "mean_r_h": 0.6,
    "win_vs_sft_rm_%": 55.0,
    "win_vs_sft_annotator_%": 52.0,
    "cut_off_%": 12.0,
}
# every threshold at a limit ROW meets exactly (max: the value, min: the value): all pass
AT_LIMIT = {
    name: ROW[promotion.threshold_column(name)[0]] for name in Thresholds.model_fields.keys()
}


def test_every_threshold_names_a_column_of_the_evaluation_table():
    rows = [
        eval_row("sft", 0, "adversarial", "a1", v_rm=False, v_ann=False, risk="r"),
        eval_row("sft", 0, "helpfulness", "h1"),
    ]
    columns = set(summary_table(dialogue_frame(rows, "eval_results"))[0].columns)
    assert set(ROW) == columns  # the made-up row has the real table's columns
    for name in Thresholds.model_fields:
        assert promotion.threshold_column(name)[0] in columns, name


def test_all_thresholds_at_their_limit_pass():
    checks = check_thresholds(ROW, Thresholds(**AT_LIMIT))
    assert len(checks) == len(Thresholds.model_fields)
    assert all(c.passed for c in checks), [c.describe() for c in checks if not c.passed]


@pytest.mark.parametrize("name", sorted(Thresholds.model_fields))
def test_each_threshold_fails_on_its_own(name):
    column, kind = promotion.threshold_column(name)
    beyond = ROW[column] - 0.5 if kind == "max" else ROW[column] + 0.5  # limit just past it
    checks = check_thresholds(ROW, Thresholds(**{**AT_LIMIT, name: beyond}))
    failed = [c for c in checks if not c.passed]
    assert [c.threshold for c in failed] == [name]
    assert failed[0].value == ROW[column] and failed[0].limit == beyond
    sign = ">" if kind == "max" else "<"
    assert f"{column} {ROW[column]:.4g} {sign}" in failed[0].describe()


def test_null_thresholds_are_not_checked_and_unmeasured_columns_fail():
    checks = check_thresholds(ROW, Thresholds(max_violation_annotator=5.0))
    assert [(c.threshold, c.passed) for c in checks] == [("max_violation_annotator", True)]
    assert check_thresholds(ROW, Thresholds()) == []
    unmeasured = {**ROW, "red_team_violation_%": None}  # no red-team prompts in the run
    (check,) = check_thresholds(unmeasured, Thresholds(max_red_team_violation=100.0))
    assert not check.passed and "not measured" in check.describe()
    nan = {**ROW, "truthful_%": float("nan")}
    assert not check_thresholds(nan, Thresholds(min_truthful=0.0))[0].passed


def test_metrics_and_table_carry_value_limit_and_pass():
    checks = check_thresholds(
        ROW, Thresholds(max_violation_annotator=5.0, min_win_vs_sft_annotator=60.0)
    )
    metrics = promotion.check_metrics(checks)
    assert metrics["promotion.passed"] == 0.0
    assert metrics["promotion.max_violation_annotator.value"] == 4.0
    assert metrics["promotion.max_violation_annotator.passed"] == 1.0
    assert metrics["promotion.min_win_vs_sft_annotator.limit"] == 60.0
    assert metrics["promotion.min_win_vs_sft_annotator.passed"] == 0.0
    table = promotion.checks_frame(checks)
    assert table["passed"].to_list() == [True, False]
    assert table["column"].to_list() == ["violation_annotator_%", "win_vs_sft_annotator_%"]


def test_final_version_is_distilled_else_the_last_round():
    assert promotion.final_version(["pretrained", "sft", "rlhf-v1", "distilled"]) == "distilled"
    rounds = ["pretrained", "sft", "rlhf-v2", "rlhf-v10", "rlhf-v9"]
    assert promotion.final_version(rounds) == "rlhf-v10"
    assert promotion.final_version(["pretrained", "sft"]) == "sft"
    with pytest.raises(promotion.PromotionError):
        promotion.final_version(["pretrained"])


def test_presets_validate_and_unknown_thresholds_are_rejected():
    for preset in ("tiny", "demo", "paper-7b", "smollm2"):
        load_config(preset)  # every preset's promotion section validates
    tiny = load_config("tiny")
    assert tiny.promotion.enabled and tiny.promotion.approval == "auto"
    assert load_config("paper-7b").promotion.approval == "person"
    with pytest.raises(ConfigError, match="max_violation_typo"):
        load_config("tiny", ["promotion.thresholds.max_violation_typo=5"])
    with pytest.raises(ConfigError, match="approval"):
        load_config("tiny", ["promotion.approval=maybe"])


# --- the registry, on a real MLflow store ---------------------------------------------------


def register_dummy(run_dir: Path, name: str, folder: Path, weights: bytes = b"w1") -> str:
    """Register `folder` (a made-up model.safetensors) as a version of `name` the way the
    stages do (tasks.tracking.register_model: tags trained_folder, weights_sha256)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(weights)
    logger = open_run(run_dir, "tiny", "register", {"stage": "test"})
    version = str(register_model(logger, folder, name, "a dummy model"))
    logger.close()
    return version


@pytest.fixture
def store(tmp_path, monkeypatch):
    # mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI, which tasks.tracking.tracking_uri
    # prefers: without this, an earlier test's store would be used
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = tmp_path / "run"
    return run_dir, MlflowClient(tracking_uri(run_dir))


def passing_checks():
    return check_thresholds(ROW, Thresholds(max_violation_annotator=5.0))


def failing_checks():
    return check_thresholds(ROW, Thresholds(max_violation_annotator=1.0))


def test_find_model_version_by_folder_and_weights(store, tmp_path):
    run_dir, client = store
    a = register_dummy(run_dir, "m", tmp_path / "a")
    b = register_dummy(run_dir, "m", tmp_path / "b", b"w2")
    assert promotion.find_model_version(client, "m", tmp_path / "a") == a
    assert promotion.find_model_version(client, "m", tmp_path / "b") == b
    again = register_dummy(run_dir, "m", tmp_path / "a")  # a forced re-registration
    assert promotion.find_model_version(client, "m", tmp_path / "a") == again
    (tmp_path / "b" / "model.safetensors").write_bytes(b"retrained")  # other weights now
    with pytest.raises(promotion.PromotionError, match="was registered from"):
        promotion.find_model_version(client, "m", tmp_path / "b")


def test_champion_never_moves_to_a_failing_or_unchecked_version(store, tmp_path):
    run_dir, client = store
    good = register_dummy(run_dir, "m", tmp_path / "good")
    bad = register_dummy(run_dir, "m", tmp_path / "bad", b"w2")
    unchecked = register_dummy(run_dir, "m", tmp_path / "new", b"w3")
    assert promotion.record_checks(client, "m", good, passing_checks(), "run-1")
    promotion.set_champion(client, "m", good)
    assert promotion.champion_version(client, "m") == good

    assert not promotion.record_checks(client, "m", bad, failing_checks(), "run-2")
    tags = client.get_model_version("m", bad).tags
    assert tags[promotion.THRESHOLDS_TAG] == "failed"
    assert "max_violation_annotator: violation_annotator_% 4 > 1" in tags[promotion.FAILED_TAG]
    with pytest.raises(promotion.PromotionError, match="failed.*max_violation_annotator"):
        promotion.set_champion(client, "m", bad)
    with pytest.raises(promotion.PromotionError, match="failed"):
        promotion.record_decision(client, "m", bad, "approved", "looks fine", "someone")
    with pytest.raises(promotion.PromotionError, match="never checked"):
        promotion.set_champion(client, "m", unchecked)
    with pytest.raises(promotion.PromotionError):
        promotion.set_candidate(client, "m", bad)
    assert promotion.champion_version(client, "m") == good  # it stayed where it was
    assert promotion.aliases_of(client, "m", bad) == []
    assert promotion.DECISION_TAG not in client.get_model_version("m", bad).tags

    # a version that passed once and fails a later check (stricter thresholds) is refused too
    assert not promotion.record_checks(client, "m", good, failing_checks(), "run-3")
    with pytest.raises(promotion.PromotionError):
        promotion.set_champion(client, "m", good)


def test_decisions_tag_the_version_and_approval_moves_champion(store, tmp_path):
    run_dir, client = store
    first = register_dummy(run_dir, "m", tmp_path / "first")
    second = register_dummy(run_dir, "m", tmp_path / "second", b"w2")
    for v in (first, second):
        promotion.record_checks(client, "m", v, passing_checks(), "run")
    promotion.record_decision(client, "m", first, "approved", "good enough", "ana")
    promotion.record_decision(client, "m", second, "rejected", "too many refusals", "ben")
    assert promotion.champion_version(client, "m") == first
    tags = client.get_model_version("m", second).tags
    assert tags[promotion.DECISION_TAG] == "rejected"
    assert tags[promotion.REASON_TAG] == "too many refusals"
    assert tags[promotion.APPROVER_TAG] == "ben" and tags[promotion.TIME_TAG].endswith("UTC")
    assert client.get_model_version("m", first).tags[promotion.APPROVER_TAG] == "ana"


def evaluation_table(path: Path, final: dict) -> Path:
    """An evaluation.csv with pretrained, sft and the final version's row."""
    rows = [
        {**ROW, "version": "pretrained", "violation_annotator_%": 90.0},
        {**ROW, "version": "sft", "win_vs_sft_annotator_%": 50.0},
        final,
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_csv(path)
    return path


# --- the gate (flows/promote.py) with approval auto: no flow run needed ----------------------


def gate_setup(tmp_path, monkeypatch, final: dict, **promotion_cfg):
    """A run directory in tmp_path with an evaluate MLflow run, the final version (rlhf-v1)
    registered, its evaluation table; returns (cfg, EvaluateResult, client, registered name)."""
    from flows.results import EvaluateResult

    run_dir = tmp_path / "run"
    monkeypatch.setenv("RECIPE_RUN_DIR", str(run_dir))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # see `store`
    cfg = load_config("tiny")
    cfg = cfg.model_copy(update={"promotion": promotion.PromotionConfig(**promotion_cfg)})
    name = cfg.rlhf.registered_model
    folder = tmp_path / "models" / "rlhf-v1"
    register_dummy(cfg.run_dir, name, folder, weights=str(tmp_path).encode())
    evaluate_run = open_run(cfg.run_dir, "tiny", "evaluate", {"stage": "evaluate"})
    evaluate_run.close()
    table = evaluation_table(tmp_path / "evaluation.csv", {**final, "version": "rlhf-v1"})
    evaluate = EvaluateResult(
        versions={"pretrained": "p", "sft": "s", "rlhf-v1": str(folder)},
        artifacts={"evaluation.csv": str(table)},
        stats={},
        states={},
        mlflow_run_id=evaluate_run.run_id,
        flow_run_id="",
    )
    return cfg, evaluate, MlflowClient(tracking_uri(cfg.run_dir)), name


def test_gate_auto_promotes_a_passing_version_and_logs_every_threshold(tmp_path, monkeypatch):
    from flows.promote import promotion_gate

    thresholds = {"max_violation_annotator": 5.0, "min_win_vs_sft_annotator": 50.0}
    cfg, evaluate, client, name = gate_setup(
        tmp_path, monkeypatch, ROW, enabled=True, thresholds=thresholds
    )
    outcome = promotion_gate(cfg, evaluate, report="/tmp/report.html")
    assert outcome.version == "rlhf-v1" and outcome.passed and outcome.decision == "approved"
    assert outcome.aliases == ["candidate", "champion"]
    assert str(client.get_model_version_by_alias(name, "champion").version) == outcome.model_version
    run = client.get_run(evaluate.mlflow_run_id)
    m, tags = run.data.metrics, run.data.tags
    assert m["promotion.passed"] == 1.0
    assert m["promotion.max_violation_annotator.value"] == 4.0
    assert m["promotion.max_violation_annotator.limit"] == 5.0
    assert m["promotion.min_win_vs_sft_annotator.passed"] == 1.0
    assert tags["promotion.version"] == "rlhf-v1" and tags["promotion.decision"] == "approved"
    assert tags["promotion.model_version"] == f"{name}/{outcome.model_version}"
    logged = {a.path for a in client.list_artifacts(evaluate.mlflow_run_id, "tables")}
    assert "tables/promotion_thresholds.csv" in logged
    mv = client.get_model_version(name, outcome.model_version)
    assert mv.tags[promotion.DECISION_TAG] == "approved" and mv.tags["promotion.approver"] == "auto"


def test_gate_moves_no_alias_when_a_threshold_fails(tmp_path, monkeypatch):
    from flows.promote import promotion_gate

    failing = {**ROW, "violation_annotator_%": 12.5}
    cfg, evaluate, client, name = gate_setup(
        tmp_path,
        monkeypatch,
        failing,
        enabled=True,
        thresholds={"max_violation_annotator": 5.0, "max_toxic": 1.0},
    )
    outcome = promotion_gate(cfg, evaluate)
    assert not outcome.passed and outcome.decision == "failed thresholds"
    assert outcome.aliases == [] and outcome.champion is None
    assert outcome.failed == ["max_violation_annotator: violation_annotator_% 12.5 > 5"]
    mv = client.get_model_version(name, outcome.model_version)
    assert mv.tags[promotion.THRESHOLDS_TAG] == "failed"
    assert "max_violation_annotator" in mv.tags[promotion.FAILED_TAG]
    run = client.get_run(evaluate.mlflow_run_id)
    assert run.data.metrics["promotion.passed"] == 0.0
    assert run.data.metrics["promotion.max_toxic.passed"] == 1.0
    assert run.data.tags[promotion.THRESHOLDS_TAG] == "failed"


def test_gate_is_off_unless_enabled(tmp_path, monkeypatch):
    from flows.promote import promotion_gate

    cfg, evaluate, client, name = gate_setup(tmp_path, monkeypatch, ROW, enabled=False)
    assert promotion_gate(cfg, evaluate) is None
    assert "promotion.passed" not in client.get_run(evaluate.mlflow_run_id).data.metrics
