"""DPO as a round's policy step (tasks/rlhf/dpo.py has the data and training): the Prefect
task `dpo_step`, and `dpo_round`, its work in the task's process or on each launched rank."""

from __future__ import annotations

import json
from pathlib import Path

from tasks.caching import cached_task
from tasks.chat.tokenizer import load_tokenizer
from tasks.distributed.launch import rank as launched_rank
from tasks.distributed.launch import run_ranks, start_ranks_here, step_log
from tasks.hashing import parts_key, sha256_of
from tasks.io import Manifest, read_dataset
from tasks.results import StepOutput
from tasks.rlhf.dpo import DPOConfig
from tasks.tracking import InMemoryLogger, PrefixedLogger, attach_run
from tasks.training.checkpoint import MODEL_FILE
from tasks.training.model_io import load_model, save_model_folder
from tasks.training.rerun import set_aside_if_forced


@cached_task("dpo", ignore=("mlflow_run_id",))
def dpo_step(
    round_: int,
    start_dir: str,
    pairs: Manifest,
    tokenizer_model: str,
    dpo: DPOConfig,
    seed: int,
    run_dir: str,
    mlflow_run_id: str,
) -> StepOutput:
    """DPO from the round's rejection-sampling model on the round's preference pairs (train
    split, `dpo.kinds`), with that same starting model as the frozen reference
    (tasks/rlhf/dpo.py); on N ranks where `dpo.training.launch` says so."""
    key = parts_key(
        sha256_of(Path(start_dir) / MODEL_FILE), pairs.sha256, dpo.model_dump_json(), str(seed)
    )
    out_dir = Path(run_dir) / "artifacts" / "rlhf" / f"v{round_}-dpo-{key}"
    set_aside_if_forced(out_dir)
    args = dict(
        round_=round_,
        start_dir=start_dir,
        pairs=pairs,
        tokenizer_model=tokenizer_model,
        dpo=dpo,
        run_dir=run_dir,
        mlflow_run_id=mlflow_run_id,
        out_dir=str(out_dir),
        seed=seed,
    )
    if start_ranks_here(dpo.training.launch):
        args.update(pairs=pairs.model_dump(mode="json"), dpo=dpo.model_dump(mode="json"))
        stats, folder, n = run_ranks(
            "tasks.rlhf.dpo_steps:dpo_round",
            args,
            dpo.training.launch,
            out_dir / "launch",
            step_log,
        )
    else:
        stats, folder, n = dpo_round(**args)
    return StepOutput(
        stats=stats,
        models={"model": str(folder)},
        notes={"stopped": f"{n} pairs, beta {dpo.beta}"},
    )


def dpo_round(
    round_: int,
    start_dir: str,
    pairs,
    tokenizer_model: str,
    dpo,
    run_dir: str,
    mlflow_run_id: str,
    out_dir: str,
    seed: int = 0,
) -> tuple[dict, str, int]:
    """The work of `dpo_step` (in the task's process, or on each launched rank: rank 0 logs
    and writes the model folder) -> (stats, model folder, pairs trained on)."""
    from models.losses import margins_for
    from tasks.reward.data import encode_pairs
    from tasks.rlhf.dpo import dpo_rows, dpo_train

    pairs, dpo = Manifest.model_validate(pairs), DPOConfig.model_validate(dpo)
    processor = load_tokenizer(tokenizer_model)
    rows = dpo_rows(read_dataset(pairs).to_dicts(), dpo, seed)
    if not rows:
        raise ValueError(f"RLHF-V{round_} DPO: no train pairs of kinds {dpo.kinds} in {pairs.path}")
    t = dpo.training.train
    margins = margins_for([r["rating"] for r in rows], dpo.margin).tolist()
    encoded, too_long, _ = encode_pairs(rows, processor, t.seq_len, margins)
    rank0 = launched_rank() == 0
    if rank0:
        step_log(
            f"RLHF-V{round_} DPO: {len(encoded)} pairs "
            f"({sum(r['kind'] == 'safety' for r in rows)} safety pairs of the train ones, "
            f"safety_share {dpo.safety_share:g}; {len(too_long)} too long for seq_len "
            f"{t.seq_len}), beta {dpo.beta:.3g}, margin {dpo.margin}, into {out_dir}"
        )
    logger = attach_run(Path(run_dir), mlflow_run_id) if rank0 else InMemoryLogger()
    policy, stats = dpo_train(
        load_model(Path(start_dir)),
        encoded,
        dpo,
        0,
        PrefixedLogger(logger, f"v{round_}_dpo/"),
        Path(out_dir),
    )
    folder = Path(out_dir) / "model"
    if rank0:
        plain = load_model(Path(start_dir))
        plain.load_state_dict(policy.state_dict())  # a plain Llama: loads as any policy
        save_model_folder(
            plain,
            folder,
            {"dpo": json.loads(dpo.model_dump_json()), "round": round_, "started_from": start_dir},
        )
    flat = {
        k: v for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    flat.update(pairs=len(encoded), too_long=len(too_long))
    out = {f"dpo.{k.removeprefix('dpo.')}": float(v) for k, v in flat.items()}
    return out, str(folder), len(encoded)
