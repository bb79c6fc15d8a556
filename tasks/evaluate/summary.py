"""The evaluation summary (paper Table 14 / Fig. 17 style): one table of rates per model
version, violation % per risk category, red-team carry-over between versions, and a plot.
Pure code over `eval_results` rows; rates over no prompts are None, not 0."""

from __future__ import annotations

import numpy as np
import polars as pl

from tasks.evaluate import metrics
from tasks.plots import figure_png, pyplot


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def summary_table(rows: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(main table, violation % per risk category, red-team carry-over) from eval_results rows.

    Main table, one row per version, rates in %: violation % single-turn and multi-turn by the
    Safety RM and by the annotator, red-team violation % (annotator), false refusal % on the
    borderline and helpfulness prompts, toxic % of RealToxicityPrompts continuations,
    TruthfulQA match %, mean R_h on helpfulness prompts, and the helpfulness win rate % against
    SFT by the Helpfulness RM and by the annotator (ties half; only prompts both answered), and
    cut_off_%: the share of the version's answers (all suites) cut off at max_new_tokens.
    """
    versions = rows.select("version", "order").unique().sort("order")
    sft = rows.filter(pl.col("version") == "sft")
    main, by_cat, red = [], [], []
    previous: set[str] | None = None
    for version, order in versions.iter_rows():
        v = rows.filter(pl.col("version") == version)

        def suite(name):
            return v.filter(pl.col("suite") == name)

        def pct(frame, col):
            rate = metrics.violation_rate(frame[col].to_list()) if frame.height else None
            return None if rate is None else 100 * rate

        helpful = suite("helpfulness")
        joined = helpful.join(
            sft.filter(pl.col("suite") == "helpfulness"), on="prompt_id", suffix="_sft"
        )
        tox = suite("realtoxicity")["toxicity"].to_list()
        toxic = metrics.toxic_share(tox) if tox else None
        main.append(
            {
                "version": version,
                "violation_rm_%": pct(suite("adversarial"), "violation_rm"),
                "violation_annotator_%": pct(suite("adversarial"), "violation_annotator"),
                "multi_turn_violation_rm_%": pct(suite("multi_turn"), "violation_rm"),
                "multi_turn_violation_annotator_%": pct(suite("multi_turn"), "violation_annotator"),
                "red_team_violation_%": pct(suite("red_team"), "violation_annotator"),
                "false_refusal_borderline_%": pct(suite("borderline"), "refusal"),
                "false_refusal_helpfulness_%": pct(helpful, "refusal"),
                "toxic_%": None if toxic is None else 100 * toxic,
                "truthful_%": pct(suite("truthfulqa"), "truthful"),
                "mean_r_h": _mean(helpful["r_h"].to_list()),
                "win_vs_sft_rm_%": 100
                * metrics.win_rate(joined["r_h"].to_list(), joined["r_h_sft"].to_list())
                if joined.height
                else None,
                "win_vs_sft_annotator_%": 100
                * metrics.win_rate(
                    joined["annotator_score"].to_list(), joined["annotator_score_sft"].to_list()
                )
                if joined.height
                else None,
                "cut_off_%": 100 * float((~v["ended"]).mean()) if v.height else None,
            }
        )
        for cat, frame in suite("adversarial").group_by("risk_category"):
            by_cat.append(
                {
                    "version": version,
                    "order": order,
                    "risk_category": cat[0],
                    "violation_rm_%": pct(frame, "violation_rm"),
                    "violation_annotator_%": pct(frame, "violation_annotator"),
                    "prompts": frame.height,
                }
            )
        violating = set(
            suite("red_team").filter(pl.col("violation_annotator"))["prompt_id"].to_list()
        )
        carry = metrics.red_team_carryover(previous, violating) if previous is not None else None
        red.append(
            {
                "version": version,
                "violating_prompts": len(violating),
                "prompts": suite("red_team").height,
                "previous_violations_now_safe": carry["now_safe"] if carry else None,
                "share_fixed_%": 100 * carry["share_fixed"]
                if carry and carry["share_fixed"] is not None
                else None,
                "new_violations": carry["new_violations"] if carry else None,
            }
        )
        previous = violating
    by_cat_frame = (
        pl.DataFrame(by_cat).sort("order", "risk_category").drop("order")
        if by_cat
        else pl.DataFrame()
    )
    return pl.DataFrame(main), by_cat_frame, pl.DataFrame(red)


def summary_png(table: pl.DataFrame) -> bytes:
    """Fig. 17 style: violation % against helpfulness (win rate vs SFT by the annotator)."""
    fig, (left, right) = pyplot().subplots(1, 2, figsize=(11, 4))
    x = list(range(table.height))
    for col in (
        "violation_rm_%",
        "violation_annotator_%",
        "red_team_violation_%",
        "false_refusal_borderline_%",
        "toxic_%",
        "truthful_%",
    ):
        left.plot(
            x, [v if v is not None else float("nan") for v in table[col].to_list()], "-o", label=col
        )
    left.set_xticks(x, table["version"].to_list(), rotation=30)
    left.set_ylabel("%")
    left.set_title("Safety, refusal, toxicity, truthfulness per version")
    left.legend(fontsize=7)
    left.grid(alpha=0.3)
    for row in table.iter_rows(named=True):
        if row["violation_annotator_%"] is not None and row["win_vs_sft_annotator_%"] is not None:
            right.scatter(row["win_vs_sft_annotator_%"], row["violation_annotator_%"])
            right.annotate(
                row["version"],
                (row["win_vs_sft_annotator_%"], row["violation_annotator_%"]),
                fontsize=8,
            )
    right.set_xlabel("helpfulness win rate vs SFT, annotator (%)")
    right.set_ylabel("violation %, annotator")
    right.set_title("Helpfulness vs safety")
    right.grid(alpha=0.3)
    return figure_png(fig)
