"""Prefect tasks of the SFT stage (RECIPE.md §4, §8): dialogues -> curation -> chat-format
examples -> SFT from the pretrained model -> Ghost Attention data sampled from it -> SFT with
GAtt -> multi-turn consistency of both (paper Table 30)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import polars as pl
from prefect.logging import get_run_logger

from data_contracts import get_contract
from tasks.caching import cached_task
from tasks.chat.answer import make_answer_fn, sample_chats
from tasks.chat.tokenizer import load_tokenizer
from tasks.distributed.launch import rank as launched_rank
from tasks.distributed.launch import run_ranks, start_ranks_here, step_log
from tasks.hashing import parts_key, sha256_of
from tasks.io import Manifest, read_dataset, write_dataset
from tasks.judges.toxicity import ToxicityConfig, make_scorer
from tasks.records import dialogue_frame
from tasks.results import StepOutput, write_artifact
from tasks.sft.config import SftConfig
from tasks.sft.curate import curate
from tasks.sft.dataset import (
    collect,
    contract_failures_to_quarantine,
    excluded_rows,
    quarantine_rows,
)
from tasks.sft.gatt import build_gatt
from tasks.sft.instructions import instruction_demos
from tasks.sft.multiturn import eval_conversations, multiturn_recall, plot_recall
from tasks.sft.tokenize import cap_adversarial, tokenize_rows
from tasks.tracking import InMemoryLogger, PrefixedLogger, attach_run
from tasks.training.finetune import FinetuneConfig, finetune, loss_alone
from tasks.training.model_io import export_model, load_model
from tasks.training.rerun import set_aside_if_forced

DIALOGUES, EXCLUDED, EXAMPLES, QUARANTINE = (
    "sft_dialogues",
    "sft_excluded",
    "sft_examples",
    "quarantine",
)


def _write(rows: list[dict], contract: str, data_dir: str) -> Manifest:
    return write_dataset(dialogue_frame(rows, contract), contract, Path(data_dir))


def _rows(manifest: Manifest) -> list[dict]:
    return read_dataset(manifest).to_dicts()


@cached_task("collect_dialogues")
def collect_step(
    cfg: SftConfig,
    archives: dict[str, str],
    user_files_sha256: dict[str, str],
    seed: int,
    data_dir: str,
) -> StepOutput:
    """Read every SFT source; rows that break the contract go to quarantine with the reason.
    `user_files_sha256` is there so the cache sees a changed user file."""
    rows, excluded, bad, stats = collect(
        cfg.sources, {k: Path(v) for k, v in archives.items()}, seed
    )
    valid, invalid = get_contract(DIALOGUES).split_valid(
        dialogue_frame(rows, DIALOGUES), "collected"
    )
    bad = quarantine_rows(bad) + contract_failures_to_quarantine(invalid)
    stats.update({"quarantined": len(bad), "dialogues": valid.height})
    get_run_logger().info(
        "SFT sources: %d dialogues, %d excluded by source rules, %d quarantined",
        valid.height,
        len(excluded),
        len(bad),
    )
    return StepOutput(
        outputs={
            DIALOGUES: write_dataset(valid, DIALOGUES, Path(data_dir)),
            EXCLUDED: _write(excluded_rows(excluded, "ingest"), EXCLUDED, data_dir),
            QUARANTINE: write_dataset(_quarantine_frame(bad), QUARANTINE, Path(data_dir)),
        },
        stats={f"collect.{k}": v for k, v in stats.items()},
    )


def _quarantine_frame(records: list[dict]) -> pl.DataFrame:
    import pyarrow as pa

    return pl.from_arrow(pa.Table.from_pylist(records, schema=get_contract(QUARANTINE).schema))


@cached_task("curate")
def curate_step(
    dialogues: Manifest, cfg: SftConfig, toxicity: ToxicityConfig, seed: int, data_dir: str
) -> StepOutput:
    """Limits, dedup and response toxicity; then the instruction demonstrations are added."""
    kept, excluded, stats = curate(_rows(dialogues), cfg.curation, make_scorer(toxicity))
    train = [r for r in kept if r["split"] == "train"]
    n_demos = round(cfg.instruction_demos.share * len(train))
    demos, demo_stats = instruction_demos(
        train, n_demos, seed, cfg.instructions.shorten_prob, cfg.instructions.space()
    )
    stats.update({f"instruction_demos.{k}": float(v) for k, v in demo_stats.items()})
    get_run_logger().info(
        "SFT curation: %d kept, %d excluded, %d instruction demonstrations",
        len(kept),
        len(excluded),
        len(demos),
    )
    return StepOutput(
        outputs={
            DIALOGUES: _write(kept + demos, DIALOGUES, data_dir),
            EXCLUDED: _write(excluded_rows(excluded, "curate"), EXCLUDED, data_dir),
        },
        stats={f"curate.{k}": float(v) for k, v in stats.items()},
    )


@cached_task("tokenize")
def tokenize_step(
    dialogues: Manifest, tokenizer_model: str, cfg: SftConfig, data_dir: str
) -> StepOutput:
    """Chat-format tokens and labels per dialogue (too-long ones cut at a turn or excluded)."""
    processor = load_tokenizer(tokenizer_model)
    rows, capped = cap_adversarial(_rows(dialogues), cfg.mix.max_adversarial)
    examples, excluded, stats = tokenize_rows(
        rows, processor, cfg.format.mask_strategy, cfg.finetune.train.seq_len
    )
    excluded = capped + excluded
    stats["mix_capped"] = len(capped)
    get_run_logger().info(
        "SFT examples: %d (%d tokens, %d targets), %d excluded",
        len(examples),
        stats["tokens"],
        stats["target_tokens"],
        len(excluded),
    )
    return StepOutput(
        outputs={
            EXAMPLES: _write(examples, EXAMPLES, data_dir),
            EXCLUDED: _write(excluded_rows(excluded, "tokenize"), EXCLUDED, data_dir),
        },
        stats={f"tokenize.{k}": float(v) for k, v in stats.items()},
    )


def _finetune(
    examples: Manifest,
    init_dir: str,
    finetune_cfg: FinetuneConfig,
    cfg: SftConfig,
    tokenizer_model: str,
    run_dir: str,
    mlflow_run_id: str,
    label: str,
) -> tuple[dict, dict, Path]:
    """The shared loop from `init_dir` on the examples' train split (held-out split for
    validation); on N ranks where `finetune_cfg.launch` says so (rank 0 logs and exports)."""
    examples = Manifest.model_validate(examples)  # dicts where a launched rank calls it
    finetune_cfg = FinetuneConfig.model_validate(finetune_cfg)
    cfg = SftConfig.model_validate(cfg)
    key = parts_key(
        examples.sha256,
        sha256_of(Path(init_dir) / "model.safetensors"),
        finetune_cfg.model_dump_json(),
        cfg.format.model_dump_json(),
    )
    out_dir = Path(run_dir) / "artifacts" / "sft" / f"{label}-{key}"  # keyed by inputs: resumable
    if start_ranks_here(finetune_cfg.launch):  # the Prefect task: start the ranks and wait
        set_aside_if_forced(out_dir)  # --rerun trains again; only a crash resumes
        stats, pack_stats, model_dir = run_ranks(
            "tasks.sft.steps:_finetune",
            {
                "examples": examples.model_dump(mode="json"),
                "init_dir": init_dir,
                "finetune_cfg": finetune_cfg.model_dump(mode="json"),
                "cfg": cfg.model_dump(mode="json"),
                "tokenizer_model": tokenizer_model,
                "run_dir": run_dir,
                "mlflow_run_id": mlflow_run_id,
                "label": label,
            },
            finetune_cfg.launch,
            out_dir / "launch",
            log=step_log,
        )
        return stats, pack_stats, Path(model_dir)
    df = read_dataset(examples)
    processor = load_tokenizer(tokenizer_model)
    model = load_model(Path(init_dir)).train()
    rank = launched_rank()
    if rank == 0:
        step_log(f"SFT ({label}): {df.height} examples from {init_dir} into {out_dir}")
    if not finetune_cfg.launch.distributed:
        set_aside_if_forced(out_dir)  # --rerun trains again; only a crash resumes
    logger = attach_run(Path(run_dir), mlflow_run_id) if rank == 0 else InMemoryLogger()
    stats, pack_stats = finetune(
        model,
        df.filter(pl.col("split") == "train"),
        df.filter(pl.col("split") == "heldout"),
        finetune_cfg,
        pad_id=0,
        separator=cfg.format.separator_ids(processor),
        logger=PrefixedLogger(logger, f"{label}/"),
        out_dir=out_dir,
        block_diagonal=cfg.format.block_diagonal,
    )
    model_dir = out_dir / "model"
    if rank == 0:
        export_model(Path(stats["checkpoint"]), model_dir)
        # comparable across sft.format.packing: each held-out example in a context of its own;
        # from the exported folder, since under ZeRO-3 the in-memory module holds a shard only
        stats.update(
            loss_alone(
                load_model(model_dir),
                df.filter(pl.col("split") == "heldout"),
                finetune_cfg.train.seq_len,
            )
        )
    return stats, pack_stats, model_dir


def _train_output(label: str, stats: dict, pack_stats: dict, model_dir: Path) -> StepOutput:
    out = {
        f"{label}.{k}": float(v)
        for k, v in {**stats, **pack_stats}.items()
        if isinstance(v, (int, float))
    }
    files = {f"{label}_loss_curve.png": stats["loss_curve"]} if stats.get("loss_curve") else {}
    return StepOutput(stats=out, files=files, models={"model": str(model_dir)})


@cached_task("train_base", ignore=("mlflow_run_id",))
def train_base_step(
    examples: Manifest,
    pretrained_dir: str,
    cfg: SftConfig,
    tokenizer_model: str,
    run_dir: str,
    mlflow_run_id: str,
) -> StepOutput:
    """SFT from the pretrained checkpoint on the curated examples (no GAtt data)."""
    stats, pack_stats, model_dir = _finetune(
        examples, pretrained_dir, cfg.finetune, cfg, tokenizer_model, run_dir, mlflow_run_id, "base"
    )
    return _train_output("base", stats, pack_stats, model_dir)


@cached_task("gatt_data")
def gatt_data_step(
    dialogues: Manifest,
    examples: Manifest,
    base_dir: str,
    tokenizer_model: str,
    cfg: SftConfig,
    seed: int,
    data_dir: str,
) -> StepOutput:
    """Ghost Attention data (§3.3): answers sampled from the SFT model with the instruction on
    every user turn, kept where code confirms the instruction holds; then the instruction moves
    to the system prompt and earlier turns get no loss. Mixed with replayed SFT examples."""
    g = cfg.gatt
    processor = load_tokenizer(tokenizer_model)
    model = load_model(Path(base_dir))
    answer_fn = make_answer_fn(
        model, processor, g.max_new_tokens, g.temperature, g.top_p, g.batch_size
    )
    rows = _rows(dialogues)
    pool = [
        r
        for r in rows
        if r["split"] == "train" and len(r["turns"]) >= 4 and r["source"] in g.sources
    ]
    random.Random(seed).shuffle(pool)
    kept, dropped, stats = build_gatt(
        pool[: g.dialogues],
        answer_fn,
        seed,
        g.samples_per_turn,
        cfg.instructions.shorten_prob,
        g.max_turns,
        g.batch_size,
        cfg.instructions.space(),
    )
    gatt_examples, too_long, tok_stats = tokenize_rows(
        kept, processor, cfg.format.mask_strategy, g.finetune.train.seq_len
    )
    base = read_dataset(examples)
    replay = base.filter(pl.col("split") == "train")
    n_replay = min(replay.height, round(g.replay_ratio * len(gatt_examples)))
    mix = pl.concat(
        [
            dialogue_frame(gatt_examples, EXAMPLES),
            replay.sample(n_replay, seed=seed),
            base.filter(pl.col("split") == "heldout"),
        ]
    )
    stats.update(
        {
            "replayed_examples": n_replay,
            "gatt_examples_tokenized": len(gatt_examples),
            **{f"tokenize.{k}": v for k, v in tok_stats.items()},
        }
    )
    get_run_logger().info(
        "GAtt: %d of %d dialogues kept, %d examples (+%d replayed)",
        stats.get("dialogues_kept", 0),
        stats.get("dialogues", 0),
        len(gatt_examples),
        n_replay,
    )
    excluded = excluded_rows(dropped, "gatt") + excluded_rows(too_long, "gatt")
    return StepOutput(
        outputs={
            "gatt_dialogues": _write(kept, DIALOGUES, data_dir),
            EXCLUDED: _write(excluded, EXCLUDED, data_dir),
            EXAMPLES: write_dataset(mix, EXAMPLES, Path(data_dir)),
        },
        stats={f"gatt.{k}": float(v) for k, v in stats.items() if isinstance(v, (int, float))},
    )


@cached_task("train_gatt", ignore=("mlflow_run_id",))
def train_gatt_step(
    examples: Manifest,
    base_dir: str,
    cfg: SftConfig,
    tokenizer_model: str,
    run_dir: str,
    mlflow_run_id: str,
) -> StepOutput:
    """Continue the SFT model on GAtt examples + replayed SFT examples."""
    stats, pack_stats, model_dir = _finetune(
        examples, base_dir, cfg.gatt.finetune, cfg, tokenizer_model, run_dir, mlflow_run_id, "gatt"
    )
    return _train_output("gatt", stats, pack_stats, model_dir)


@cached_task("evaluate")
def evaluate_step(
    dialogues: Manifest,
    models: dict[str, str],
    tokenizer_model: str,
    cfg: SftConfig,
    seed: int,
    run_dir: str,
    data_dir: str,
) -> StepOutput:
    """Multi-turn consistency (Table 30) for each model, and sample chats of the last one."""
    m = cfg.multiturn
    processor = load_tokenizer(tokenizer_model)
    heldout = [r for r in _rows(dialogues) if r["split"] == "heldout" and r["source"] in m.sources]
    conversations = eval_conversations(
        heldout,
        m.conversations,
        max(m.turns),
        seed,
        cfg.instructions.shorten_prob,
        cfg.instructions.space(),
    )
    table, transcripts = [], {}
    for name, model_dir in models.items():
        answer_fn = make_answer_fn(
            load_model(Path(model_dir)),
            processor,
            m.max_new_tokens,
            temperature=0.0,
            top_p=1.0,
            batch_size=m.batch_size,
        )
        rows, transcripts[name] = multiturn_recall(
            conversations, answer_fn, tuple(m.turns), seed, m.batch_size
        )
        table += [{"model": name, **r} for r in rows]
    df = dialogue_frame(table, "multiturn_eval")
    stats = {
        f"multiturn.{_slug(r['model'])}.turn_{r['turn']}": r["recall"]
        for r in table
        if r["recall"] is not None
    }
    last = load_model(Path(list(models.values())[-1]))
    chats = sample_chats(
        last, processor, _sample_prompts(_rows(dialogues), seed), m.max_new_tokens * 2, seed
    )
    files = {
        "multiturn_recall.png": str(
            write_artifact(plot_recall(df), Path(run_dir), "sft", "multiturn_recall.png")
        ),
        "sample_chats.md": str(
            write_artifact(chats.encode(), Path(run_dir), "sft", "sample_chats.md")
        ),
        "multiturn_transcripts.json": str(
            write_artifact(
                json.dumps(transcripts, indent=1).encode(),
                Path(run_dir),
                "sft",
                "multiturn_transcripts.json",
            )
        ),
    }
    get_run_logger().info("multi-turn recall:\n%s", df)
    return StepOutput(
        outputs={"multiturn_eval": write_dataset(df, "multiturn_eval", Path(data_dir))},
        stats=stats,
        files=files,
    )


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name).strip("_")


def _sample_prompts(rows: list[dict], seed: int) -> list[dict]:
    """Three held-out prompts: a task with a known answer, a chit-chat opener, an adversarial."""
    rng = random.Random(seed)
    picks = []
    for category, title in (
        ("arithmetic", "Task (known answer)"),
        ("chitchat", "Chit-chat"),
        ("adversarial", "Adversarial prompt (held out)"),
    ):
        pool = [r for r in rows if r["split"] == "heldout" and r["category"] == category]
        if pool:
            row = rng.choice(pool)
            picks.append(
                {"title": title, "system": row["system"], "user": row["turns"][0]["content"]}
            )
    return picks
