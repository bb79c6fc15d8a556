"""The promotion gate: the run's final model version against configured thresholds, and the
registry aliases that follow from it.

After evaluation, the row of the final version (distilled where distillation trained, else
the last RLHF round) of the evaluation table (tasks/evaluate/summary.py; rates in %) is
checked against `promotion.thresholds`. Each threshold is named after the column it bounds:
`max_<column>` or `min_<column>`, the column's `_%` left off (`max_violation_annotator` bounds
`violation_annotator_%`). A threshold left null is not checked; a column the run did not
measure (no prompts in its suite) fails its threshold: an unmeasured rate is no evidence.

What follows, on the version's registered MLflow model version:
- every check passes: alias `candidate`; with `approval: auto` also `champion`; with
  `approval: person` `champion` waits for a person's decision (flows/promote.py);
- a check fails: no alias moves; tags say which thresholds failed.

`set_champion` is the one function that moves `champion`, and it refuses a version whose
recorded threshold result is not "passed": a caller cannot promote a failing version by mistake.

Pure code (the checks) plus MLflow registry calls on a client the caller passes in; no Prefect.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal, NamedTuple

import polars as pl
from pydantic import BaseModel, ConfigDict, Field

from tasks.hashing import sha256_of
from tasks.versions import AVERAGED_VERSION

CANDIDATE, CHAMPION = "candidate", "champion"
# tags on the registered model version
THRESHOLDS_TAG = "promotion.thresholds"  # passed | failed
FAILED_TAG = "promotion.failed"  # which thresholds failed, with value and limit
CHECKED_TAG = "promotion.checked_at"
EVALUATE_RUN_TAG = "promotion.evaluate_run"  # the MLflow run whose table was checked
DECISION_TAG = "promotion.decision"  # approved | rejected | timed out
REASON_TAG = "promotion.reason"
APPROVER_TAG = "promotion.approver"
TIME_TAG = "promotion.time"
# the decisions a rerun of the gate reuses instead of asking again (a timeout is no decision)
DECIDED = ("approved", "rejected")


class PromotionError(ValueError):
    pass


class Thresholds(BaseModel):
    """Limits on the final version's row of the evaluation table (rates in %). Null: not
    checked. Names: `max_`/`min_` + the column without `_%`."""

    model_config = ConfigDict(extra="forbid")

    max_violation_rm: float | None = None  # violation_rm_% (Safety RM below safety_threshold)
    max_violation_annotator: float | None = None  # violation_annotator_% (rule annotator)
    max_multi_turn_violation_rm: float | None = None
    max_multi_turn_violation_annotator: float | None = None
    max_red_team_violation: float | None = None  # red_team_violation_%
    max_false_refusal_borderline: float | None = None  # false_refusal_borderline_%
    max_false_refusal_helpfulness: float | None = None  # false_refusal_helpfulness_%
    max_toxic: float | None = None  # toxic_% of RealToxicityPrompts continuations
    min_truthful: float | None = None  # truthful_% (TruthfulQA match)
    min_mean_r_h: float | None = None  # mean_r_h (Helpfulness RM score, not a rate)
    min_win_vs_sft_rm: float | None = None  # win_vs_sft_rm_% (50 = as helpful as SFT)
    min_win_vs_sft_annotator: float | None = None  # win_vs_sft_annotator_%
    max_cut_off: float | None = None  # cut_off_%: answers cut off at max_new_tokens


def threshold_column(name: str) -> tuple[str, Literal["max", "min"]]:
    """`max_violation_annotator` -> ("violation_annotator_%", "max")."""
    kind, _, column = name.partition("_")
    return (column if column == "mean_r_h" else f"{column}_%"), kind  # type: ignore[return-value]


class PromotionConfig(BaseModel):
    """Whether and how the final model version is promoted (README "Promotion gate")."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    thresholds: Thresholds = Thresholds()
    approval: Literal["auto", "person"] = "auto"  # who moves `champion` once thresholds pass
    approval_timeout_s: int = Field(86400, gt=0)  # a person's time to decide; then not approved


class Check(NamedTuple):
    """One threshold against the measured value. `value` None: the column was not measured."""

    threshold: str
    column: str
    kind: Literal["max", "min"]
    limit: float
    value: float | None
    passed: bool

    def describe(self) -> str:
        if self.value is None:
            return f"{self.threshold}: {self.column} not measured"
        sign = "<=" if self.kind == "max" else ">="
        ok = sign if self.passed else {"<=": ">", ">=": "<"}[sign]
        return f"{self.threshold}: {self.column} {self.value:.4g} {ok} {self.limit:.4g}"


def check_thresholds(row: dict, thresholds: Thresholds) -> list[Check]:
    """Every non-null threshold against the evaluation row (one version's row of the table)."""
    checks = []
    for name, limit in thresholds.model_dump().items():
        if limit is None:
            continue
        column, kind = threshold_column(name)
        if column not in row:
            raise PromotionError(
                f"promotion.thresholds.{name}: the evaluation table has no column {column!r} "
                f"(columns: {sorted(row)})"
            )
        value = row[column]
        value = None if value is None or value != value else float(value)  # NaN: not measured
        passed = value is not None and (value <= limit if kind == "max" else value >= limit)
        checks.append(Check(name, column, kind, float(limit), value, passed))
    return checks


def checks_frame(checks: list[Check]) -> pl.DataFrame:
    """The thresholds table: one row per checked threshold."""
    return pl.DataFrame(
        [
            {
                "threshold": c.threshold,
                "column": c.column,
                "kind": c.kind,
                "limit": c.limit,
                "value": c.value,
                "passed": c.passed,
            }
            for c in checks
        ],
        schema={
            "threshold": pl.String,
            "column": pl.String,
            "kind": pl.String,
            "limit": pl.Float64,
            "value": pl.Float64,
            "passed": pl.Boolean,
        },
    )


def check_metrics(checks: list[Check]) -> dict[str, float]:
    """MLflow metrics: value, limit and pass (1/0) of each threshold."""
    out: dict[str, float] = {"promotion.passed": float(all(c.passed for c in checks))}
    for c in checks:
        if c.value is not None:
            out[f"promotion.{c.threshold}.value"] = c.value
        out[f"promotion.{c.threshold}.limit"] = c.limit
        out[f"promotion.{c.threshold}.passed"] = float(c.passed)
    return out


def final_version(versions: list[str]) -> str:
    """The run's final model version: distilled if the run has it, else the averaged RLHF policy
    (`rlhf-avg`, rlhf.average_last > 1), else the last RLHF round (else SFT, where no round
    ran), in the evaluation's version order."""
    if "distilled" in versions:
        return "distilled"
    if AVERAGED_VERSION in versions:
        return AVERAGED_VERSION
    rounds = [v for v in versions if v.startswith("rlhf-v")]
    if rounds:
        return max(rounds, key=lambda v: int(v.removeprefix("rlhf-v")))
    if "sft" in versions:
        return "sft"
    raise PromotionError(f"no promotable model version among {versions}")


def registered_name(cfg, version: str) -> str:
    """The registry name a version was registered under (tasks/register.py, per stage config)."""
    if version == "distilled":
        return cfg.distill.registered_model
    if version.startswith("rlhf-v") or version == AVERAGED_VERSION:
        return cfg.rlhf.registered_model
    if version == "sft":
        return cfg.sft.registered_model
    if version == "pretrained":
        return cfg.pretrain.registered_model
    raise PromotionError(f"unknown model version {version!r}")


def find_model_version(client, name: str, model_dir: str | Path) -> str:
    """The number of the registered version of `name` made from the model folder `model_dir`.

    Matched by what was registered, not by which run registered it: `register_model` tags
    every version with its trained folder and the weights' sha256, so a cached stage (whose
    new MLflow run registered nothing) still finds the version its first run registered.
    Several versions of one folder and weights (a forced re-registration): the newest."""
    folder = Path(model_dir).resolve()
    weights = folder / "model.safetensors"
    digest = sha256_of(weights) if weights.exists() else None
    matches = [
        mv
        for mv in client.search_model_versions(f"name = '{name}'", max_results=10000)
        if mv.tags.get("trained_folder") == str(folder)
        and (digest is None or mv.tags.get("weights_sha256") == digest)
    ]
    if not matches:
        raise PromotionError(
            f"no version of registered model {name!r} was registered from {folder}: "
            "run the stage that trains it (its register task) first"
        )
    return str(max(int(mv.version) for mv in matches))  # MLflow gives an int or a str


def _now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())


def record_checks(client, name: str, version: str, checks: list[Check], run_id: str) -> bool:
    """Tag the model version with the threshold result; returns whether every check passed."""
    passed = all(c.passed for c in checks)
    failed = "; ".join(c.describe() for c in checks if not c.passed)
    tags = {
        THRESHOLDS_TAG: "passed" if passed else "failed",
        FAILED_TAG: failed or "none",
        CHECKED_TAG: _now(),
        EVALUATE_RUN_TAG: run_id,
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    return passed


def set_candidate(client, name: str, version: str) -> None:
    _require_passed(client, name, version, CANDIDATE)
    client.set_registered_model_alias(name, CANDIDATE, version)


def set_champion(client, name: str, version: str) -> None:
    """Move `champion` to `version`: the only place that does. Refuses (PromotionError) a
    version whose recorded threshold result is not "passed" (failed, or never checked)."""
    _require_passed(client, name, version, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, version)


def _require_passed(client, name: str, version: str, alias: str) -> None:
    tags = client.get_model_version(name, version).tags
    result = tags.get(THRESHOLDS_TAG)
    if result != "passed":
        raise PromotionError(
            f"{name} version {version} cannot become {alias!r}: its promotion thresholds "
            f"{'were never checked' if result is None else 'failed'}"
            + (f" ({tags[FAILED_TAG]})" if result == "failed" and tags.get(FAILED_TAG) else "")
        )


def record_decision(
    client,
    name: str,
    version: str,
    decision: Literal["approved", "rejected", "timed out"],
    reason: str,
    approver: str = "",
) -> None:
    """Tag a decision on the version; an approval also moves `champion` (set_champion)."""
    if decision == "approved":
        set_champion(client, name, version)
    tags = {DECISION_TAG: decision, REASON_TAG: reason, APPROVER_TAG: approver, TIME_TAG: _now()}
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def aliases_of(client, name: str, version: str) -> list[str]:
    return sorted(client.get_model_version(name, version).aliases)


def champion_version(client, name: str) -> str | None:
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(name, CHAMPION).version)
    except MlflowException:
        return None
