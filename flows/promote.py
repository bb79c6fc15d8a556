"""The promotion gate after evaluation (README "Promotion gate"; the rules: tasks/promotion.py).

`promotion_gate` runs inside a flow run (the pipeline's, or `promote_flow` on its own): the
final version's evaluation row against `promotion.thresholds`, logged on the evaluate stage's
MLflow run (metrics `promotion.*`, tags, table `promotion_thresholds`) and published as Prefect
artifacts (`promotion-thresholds`, `promotion-summary`); then the registry aliases:
`candidate` when every threshold passes, `champion` at once (`approval: auto`) or when a person
approves it from the Prefect UI (`approval: person`).

A person decides through Prefect's pause/resume with input: the flow run pauses
(`pause_flow_run`, the process waits) or, when it is a deployment's top-level run, suspends
(`suspend_flow_run`: the process exits, and the resumed run starts again from the top, every
stage a cache hit, and gets the decision at the same pause key). The Prefect UI shows a
"Resume" button with the `Decision` form. No decision within `approval_timeout_s`: not
approved (a warning; the run does not fail).
"""

from __future__ import annotations

import logging
from typing import Literal

import polars as pl
from prefect import flow
from prefect.input import RunInput
from pydantic import BaseModel

from flows.results import EvaluateResult
from tasks import prefect_artifacts, promotion
from tasks.config import RecipeConfig, load_config
from tasks.tracking import attach_run, tracking_uri


def _log() -> logging.Logger | logging.LoggerAdapter:
    """The flow run's logger (shown in the Prefect UI) inside a run, else the module's."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


class Decision(RunInput):
    """What a person enters in the Prefect UI to resume a paused promotion."""

    decision: Literal["approve", "reject"]
    reason: str
    approver: str = ""


class PromotionOutcome(BaseModel):
    version: str  # the run's final model version: distilled, rlhf-v3, ...
    registered_model: str
    model_version: str  # its version number in the registry
    passed: bool  # every threshold passed
    failed: list[str]  # the failed thresholds, described
    decision: str  # "approved" | "rejected" | "timed out" | "failed thresholds" | "... earlier"
    aliases: list[str]  # the version's aliases after the gate
    champion: str | None  # the registered model's champion version after the gate


def promotion_gate(
    cfg: RecipeConfig,
    evaluate: EvaluateResult,
    report: str | None = None,
    poll_interval_s: int = 10,
) -> PromotionOutcome | None:
    """Check, log and promote the final version of `evaluate`; None when promotion is off."""
    p = cfg.promotion
    if not p.enabled:
        return None
    version = promotion.final_version(list(evaluate.versions))
    rows = pl.read_csv(evaluate.table).filter(pl.col("version") == version).to_dicts()
    if len(rows) != 1:
        raise promotion.PromotionError(f"{evaluate.table} has no row for version {version!r}")
    row = rows[0]
    checks = promotion.check_thresholds(row, p.thresholds)
    tracker = attach_run(cfg.run_dir, evaluate.mlflow_run_id)
    client = tracker.client
    name = promotion.registered_name(cfg, version)
    number = promotion.find_model_version(client, name, evaluate.versions[version])
    passed = promotion.record_checks(client, name, number, checks, evaluate.mlflow_run_id)
    failed = [c.describe() for c in checks if not c.passed]
    table = _log_checks(tracker, checks, version, f"{name}/{number}", p.approval)
    links = _links(cfg, evaluate.mlflow_run_id, client, report)
    if not passed:
        _log().warning("promotion: %s (%s/%s) failed %s", version, name, number, "; ".join(failed))
        decision = "failed thresholds"
    else:
        promotion.set_candidate(client, name, number)
        decision = _decide(cfg, client, name, number, version, row, table, links, poll_interval_s)
    outcome = PromotionOutcome(
        version=version,
        registered_model=name,
        model_version=number,
        passed=passed,
        failed=failed,
        decision=decision,
        aliases=promotion.aliases_of(client, name, number),
        champion=promotion.champion_version(client, name),
    )
    tracker.set_tags(
        {
            "promotion.decision": decision,
            "promotion.aliases": ",".join(outcome.aliases) or "none",
            "promotion.champion": f"{name}/{outcome.champion}" if outcome.champion else "none",
        }
    )
    prefect_artifacts.publish_markdown(
        "promotion-summary",
        _markdown(outcome, row, table, links),
        f"promotion of {version} ({name}/{number}): {decision}",
    )
    _log().info("promotion: %s (%s/%s): %s", version, name, number, decision)
    return outcome


def _log_checks(tracker, checks, version: str, registered: str, approval: str) -> pl.DataFrame:
    """Every threshold's value, limit and pass on the evaluate run (metrics, tags, a table) and
    as the Prefect table artifact `promotion-thresholds`; returns the table."""
    table = promotion.checks_frame(checks)
    failed = "; ".join(c.describe() for c in checks if not c.passed)
    tracker.log_metrics(promotion.check_metrics(checks))
    tracker.log_table(table, "promotion_thresholds")
    tracker.set_tags(
        {
            "promotion.version": version,
            "promotion.model_version": registered,
            "promotion.approval": approval,
            promotion.THRESHOLDS_TAG: "failed" if failed else "passed",
            promotion.FAILED_TAG: failed or "none",
        }
    )
    prefect_artifacts.publish_table("promotion", "thresholds", table, f"{version}: {registered}")
    return table


def _decide(cfg, client, name, number, version, row, table, links, poll_interval_s) -> str:
    """Move `champion` (auto), or ask a person; returns the decision as recorded."""
    p = cfg.promotion
    if p.approval == "auto":
        promotion.record_decision(
            client, name, number, "approved", "approval: auto (every threshold passed)", "auto"
        )
        return "approved"
    tags = client.get_model_version(name, number).tags
    earlier = tags.get(promotion.DECISION_TAG)
    # a person decided on these weights before (a rerun, cached): do not ask again
    if earlier in promotion.DECIDED and tags.get(promotion.APPROVER_TAG) != "auto":
        _log().info("promotion: %s/%s was %s before; not asking again", name, number, earlier)
        return f"{earlier} earlier"
    request = _markdown(None, row, table, links, version=version, registered=f"{name}/{number}")
    prefect_artifacts.publish_markdown(
        "promotion-approval-request", request, f"approve or reject {name}/{number}"
    )
    key = prefect_artifacts.artifact_key("promotion", name, number)
    answer = wait_for_decision(key, p.approval_timeout_s, poll_interval_s)
    if answer is None:
        reason = f"no decision within approval_timeout_s={p.approval_timeout_s}"
        promotion.record_decision(client, name, number, "timed out", reason)
        return "timed out"
    recorded = "approved" if answer.decision == "approve" else "rejected"
    promotion.record_decision(client, name, number, recorded, answer.reason, answer.approver)
    return recorded


def wait_for_decision(key: str, timeout_s: int, poll_interval_s: int = 10) -> Decision | None:
    """Pause (or suspend) the current flow run until a person resumes it with a `Decision`;
    None when nobody did within `timeout_s` (the flow run is set running again)."""
    from prefect.context import FlowRunContext
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run, suspend_flow_run

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise promotion.PromotionError("approval: person needs a Prefect flow run to pause")
    run = context.flow_run
    if prefect_artifacts.prefect_ui_url() is None:
        _log().warning(
            "promotion: waiting for a person's decision on the ephemeral Prefect API (no "
            "server): only this process can resume flow run %s; run `make serve` to decide "
            "from the Prefect UI",
            run.id,
        )
    _log().warning("promotion: flow run %s waits for a decision (up to %d s)", run.id, timeout_s)
    if run.deployment_id is not None and run.parent_task_run_id is None:
        # the process exits; the resumed run comes back here and gets the input
        return suspend_flow_run(wait_for_input=Decision, timeout=timeout_s, key=key)
    try:
        return pause_flow_run(
            wait_for_input=Decision, timeout=timeout_s, poll_interval=poll_interval_s, key=key
        )
    except FlowPauseTimeout:
        _log().warning("promotion: no decision within %d s: not approved", timeout_s)
        _set_running(run.id, f"promotion: no decision within {timeout_s} s")
        return None


def _set_running(flow_run_id, message: str) -> None:
    """A pause that timed out leaves the run Paused, and Prefect would end it Failed: set it
    Running again so the rest of the flow runs and the run ends as it really does."""
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run_id, Running(message=message), force=True)


def _links(cfg, run_id: str, client, report: str | None) -> dict[str, str]:
    run = client.get_run(run_id)
    link, _ = prefect_artifacts.mlflow_run_link(
        tracking_uri(cfg.run_dir), run.info.experiment_id, run_id, run.info.artifact_uri
    )
    links = {"evaluate MLflow run": link}
    if report:
        links["report"] = str(report)
    return links


def _markdown(
    outcome: PromotionOutcome | None,
    row: dict,
    table: pl.DataFrame,
    links: dict[str, str],
    version: str = "",
    registered: str = "",
) -> str:
    """The promotion request (outcome None) or summary: row, thresholds, links."""
    if outcome is None:
        title = f"# Promotion request: {version} ({registered})"
        lead = (
            "Every threshold passed: the version is `candidate`. To make it `champion`, open "
            "this flow run, press **Resume** and enter `decision` (approve or reject), "
            "`reason` and `approver`."
        )
    else:
        registered = f"{outcome.registered_model}/{outcome.model_version}"
        title = f"# Promotion: {outcome.version} ({registered}): {outcome.decision}"
        lead = (
            f"Aliases of the version: {', '.join(outcome.aliases) or 'none'}; champion of "
            f"{outcome.registered_model}: version {outcome.champion or 'none'}."
        )
    lines = [title, "", lead, "", "## Evaluation row (rates in %)", ""]
    lines += ["| column | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in row.items()]
    lines += ["", "## Thresholds", "", "| threshold | column | limit | value | passed |"]
    lines.append("|---|---|---|---|---|")
    for r in table.iter_rows(named=True):
        sign = "<=" if r["kind"] == "max" else ">="
        lines.append(
            f"| {r['threshold']} | {r['column']} | {sign} {_fmt(r['limit'])} | "
            f"{_fmt(r['value'])} | {'yes' if r['passed'] else '**no**'} |"
        )
    lines += ["", "## Links", ""]
    lines += [f"- {k}: [{v}]({v})" if "://" in v else f"- {k}: `{v}`" for k, v in links.items()]
    return "\n".join(lines)


def _fmt(value) -> str:
    if value is None:
        return "—"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


@flow(name="promote")
def promote_flow(
    preset: str = "demo",
    overrides: list[str] | None = None,
    rerun: list[str] | None = None,
    parent_run_id: str | None = None,
    evaluate: EvaluateResult | None = None,
    report: str | None = None,
) -> PromotionOutcome | None:
    """The promotion gate on its own (e.g. after changing the thresholds). Without `evaluate`
    (the evaluate stage's result), the earlier stages supply it (cached when nothing changed)."""
    cfg = load_config(preset, overrides or [])
    if evaluate is None:
        from flows.evaluate import evaluate_flow

        evaluate = evaluate_flow(preset, overrides, rerun, parent_run_id)
    return promotion_gate(cfg, evaluate, report)
