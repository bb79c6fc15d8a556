"""The headline metrics of each stage: what the run report (tasks/report/build.py) and the
Prefect artifacts (tasks/prefect_artifacts.py) show first. Every metric is in MLflow."""

# exact metric names per stage, in display order (those present are shown)
HEADLINES: dict[str, tuple[str, ...]] = {
    "corpus": (
        "rows_in",
        "rows_kept",
        "rows_excluded",
        "rows_quarantined",
        "toxicity.share_toxic",
        "toxicity.sampled_docs",
    ),
    "tokenizer": ("train.vocab_size", "eval.bytes_per_token", "eval.roundtrip_failures"),
    "pretrain": (
        "train.steps",
        "train.val_loss",
        "train.val_ppl",
        "train.tokens_per_s",
        "train.mfu",
    ),
    "sft": (
        "curate.dialogues_kept",
        "tokenize.examples",
        "base.val_loss",
        "gatt.dialogues_kept",
        "gatt.val_loss",
    ),
    "reward": (
        "collect.pairs",
        "eval.helpfulness_rm.helpfulness.avg",
        "eval.safety_rm.safety.avg",
        "eval.safety_rm.unsafe_recall_at_0.5",
        "eval.safety_rm.unsafe_precision_at_0.5",
    ),
    "rlhf": (
        "eval.sft.mean_r_c",
        "eval.final.mean_r_c",
        "eval.final.kl_to_sft",
        "eval.final.helpfulness_win_rate",
        "eval.final.safety_win_rate",
    ),
    "distill": (
        "distill.rows",
        "distill.kept",
        "distill.dropped",
        "distill.kept_delta_mean",
        "distill.delta_mean",
        "registered_version",
    ),
    "evaluate": (),
}
