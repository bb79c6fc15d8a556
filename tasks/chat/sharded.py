"""Answering on N ranks (issue 17): the contexts of a step split over the ranks of a launched
step, the answers back in input order.

    answers, ended = sharded_answers(model_dir, tokenizer_model, contexts, max_new_tokens,
                                     temperature, top_p, seed, launch, work_dir, log)

Without a launcher (`launch.launcher: none`) it is `make_answer_status_fn` in this process.
With one, `run_ranks` starts the ranks; each answers its share of the generation batches, writes
them to `work_dir/answers-rank<r>.json` (atomic; for inspection), and the shards meet on rank 0
through `all_gather_object` (no shared file system needed for that), which puts them back in
input order and returns them as the step's result.

Identity with one process: `make_answer_status_fn` answers the contexts that fit the window in
batches of `batch_size`, padded to the batch's longest prompt, the batch at `start` sampled with
seed + start. Padding is masked, but it changes the shapes of the matmuls, so the floating-point
sums (and a near-tie greedy argmax) can depend on which prompts share a batch. So the ranks
answer whole batches of the one-process order (`generation_batches`; batch k of all jobs goes to
rank k mod N), with the same rows and the same seed: greedy answers are identical to one
process, and so are sampled ones (the generator is seeded per batch, never per rank). Identity
holds on the same kind of device: a rank puts the model on its GPU when it has one, while the
in-process path runs on the CPU like the callers always did.

`answer_jobs` answers several jobs (model, contexts, temperature, seed) in one launch: the
preference collection's (variant, temperature) groups start the ranks once, not once each.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import torch
from pydantic import BaseModel, ConfigDict, Field

from tasks.chat.answer import Context, generation_batches, make_answer_status_fn
from tasks.chat.format import prompt_tokens
from tasks.chat.tokenizer import load_tokenizer
from tasks.distributed.launch import LaunchConfig, run_ranks, start_ranks_here
from tasks.io import atomic_write_bytes
from tasks.training.checkpoint import CONFIG_FILE
from tasks.training.model_io import load_model

JOBS_FILE = "answer-jobs.json"

Answers = tuple[list[str | None], list[bool | None]]  # texts and ended at EOS, None: no fit
Unit = tuple[int, int, list[int]]  # (job, batch start, context indices): one generation batch


class AnswerJob(BaseModel):
    """One `make_answer_status_fn(model, ...)(contexts, seed)` call."""

    model_config = ConfigDict(extra="forbid")

    model_dir: str
    contexts: list[tuple[str, list[dict]]]  # (system, turns ending with a user turn)
    max_new_tokens: int = Field(gt=0)
    temperature: float = Field(ge=0)
    top_p: float = Field(gt=0, le=1)
    seed: int
    batch_size: int = Field(32, gt=0)
    prefix: str = ""  # the start every answer is given (make_answer_status_fn)

    def answer_fn(self, model, processor):
        """This job's `(contexts, seed) -> (answers, ended)` for a loaded model."""
        return make_answer_status_fn(
            model,
            processor,
            self.max_new_tokens,
            self.temperature,
            self.top_p,
            self.batch_size,
            self.prefix,
        )


def sharded_answers(
    model_dir: str,
    tokenizer_model: str,
    contexts: list[Context],
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    seed: int,
    launch: LaunchConfig,
    work_dir: Path,
    log: Callable[[str], None] = print,
    batch_size: int = 32,
) -> Answers:
    """(answers, ended) for `contexts` in input order, as `make_answer_status_fn` gives them;
    on `launch`'s ranks when it names a launcher (module docstring)."""
    job = AnswerJob(
        model_dir=str(model_dir),
        contexts=contexts,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        batch_size=batch_size,
    )
    return answer_jobs([job], tokenizer_model, launch, work_dir, log)[0]


def answer_jobs(
    jobs: list[AnswerJob],
    tokenizer_model: str,
    launch: LaunchConfig,
    work_dir: Path,
    log: Callable[[str], None] = print,
    progress: Callable[[int], None] | None = None,
) -> list[Answers]:
    """Each job's (answers, ended), from one launch of `launch`'s ranks, or in this process
    when it names no launcher (or this process is itself a rank); there `progress(j)` is
    called after job j (ranks stream their own lines)."""
    if not start_ranks_here(launch):
        return _answer_here(jobs, tokenizer_model, progress)
    if not any(job.contexts for job in jobs):
        return [([], []) for _ in jobs]
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    for stale in work_dir.glob("answers-rank*.json"):
        stale.unlink()
    jobs_file = atomic_write_bytes(
        work_dir / JOBS_FILE, json.dumps([job.model_dump() for job in jobs]).encode()
    )
    got = run_ranks(
        "tasks.chat.sharded:answer_shard",
        {"jobs_file": str(jobs_file), "tokenizer_model": tokenizer_model, "out": str(work_dir)},
        launch,
        work_dir,
        log,
    )
    return [(g["answers"], g["ended"]) for g in got]


def _answer_here(
    jobs: list[AnswerJob], tokenizer_model: str, progress: Callable[[int], None] | None = None
) -> list[Answers]:
    processor = load_tokenizer(tokenizer_model)
    models = {}
    out = []
    for job in jobs:
        if job.model_dir not in models:
            models[job.model_dir] = load_model(Path(job.model_dir))
        answer = job.answer_fn(models[job.model_dir], processor)
        out.append(answer(job.contexts, job.seed))
        if progress is not None:
            progress(len(out) - 1)
    return out


def model_window(model_dir: str) -> int:
    """The model's max_seq_len from its folder's config.json (ours or a Hugging Face export),
    without loading the weights."""
    raw = json.loads((Path(model_dir) / CONFIG_FILE).read_text())
    if "model" in raw:  # our folder: {"model": LlamaConfig fields, ...}
        return int(raw["model"]["max_seq_len"])
    if raw.get("recipe_config"):  # our Hugging Face export
        return int(raw["recipe_config"]["max_seq_len"])
    from transformers import LlamaConfig as HFLlamaConfig

    from models.hf import our_config

    return our_config(HFLlamaConfig.from_dict(raw)).max_seq_len


def plan_units(jobs: list[AnswerJob], processor) -> list[Unit]:
    """Every generation batch of every job, in the one-process order (job by job)."""
    windows = {d: model_window(d) for d in {job.model_dir for job in jobs}}
    units = []
    for j, job in enumerate(jobs):
        lengths = [len(prompt_tokens(processor, s, t, job.prefix)) for s, t in job.contexts]
        batches = generation_batches(
            lengths, windows[job.model_dir], job.max_new_tokens, job.batch_size
        )
        units += [(j, start, indices) for start, indices in batches]
    return units


def answer_shard(jobs_file: str, tokenizer_model: str, out: str) -> list[dict] | None:
    """On every rank of a launched answering step: answer the generation batches k with
    k mod world == rank, write them to `out/answers-rank<r>.json`, gather all shards on
    rank 0 and return every job's answers in input order there (None on the other ranks)."""
    import torch.distributed as dist

    from tasks.training.engines import init_distributed, local_device

    rank, world = init_distributed()
    device = local_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)  # all_gather_object on nccl uses the current device
    else:  # the node's cores shared among its ranks (DESIGN: set the thread count)
        local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    jobs = [AnswerJob.model_validate(j) for j in json.loads(Path(jobs_file).read_text())]
    processor = load_tokenizer(tokenizer_model)
    units = plan_units(jobs, processor)
    mine = [u for k, u in enumerate(units) if k % world == rank]
    shard = _answer_units(jobs, mine, processor, device)
    atomic_write_bytes(Path(out) / f"answers-rank{rank}.json", json.dumps(shard).encode())
    print(  # the launcher streams a rank's output into the task's log (no Prefect import here)
        f"rank {rank} of {world}: {len(mine)} of {len(units)} generation batches, "
        f"{sum(len(u['indices']) for u in shard)} answers",
        flush=True,
    )
    shards: list[list[dict] | None] = [None] * world
    dist.all_gather_object(shards, shard)  # also the barrier: every rank has answered
    if rank != 0:
        return None
    return assemble(jobs, units, [u for s in shards for u in s])


def _answer_units(jobs: list[AnswerJob], units: list[Unit], processor, device) -> list[dict]:
    """The units' answers; one model in memory at a time (units grouped by model folder)."""
    done = []
    for model_dir in dict.fromkeys(jobs[j].model_dir for j, _, _ in units):
        model = load_model(Path(model_dir)).to(device)
        if model.config.max_seq_len != model_window(model_dir):
            raise ValueError(f"{model_dir}: config.json and the model disagree on max_seq_len")
        for j, start, indices in units:
            job = jobs[j]
            if job.model_dir != model_dir:
                continue
            answer = job.answer_fn(model, processor)
            # one batch that fits whole: its rows and its one-process seed (seed + start)
            texts, ended = answer([job.contexts[i] for i in indices], job.seed + start)
            done.append(
                {"job": j, "start": start, "indices": indices, "answers": texts, "ended": ended}
            )
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return done


def assemble(jobs: list[AnswerJob], units: list[Unit], answered: list[dict]) -> list[dict]:
    """Per job {"answers", "ended"} in input order from the ranks' answered units; None where
    a context did not fit. Every planned unit must be answered exactly once."""
    planned = sorted((j, start) for j, start, _ in units)
    got = sorted((u["job"], u["start"]) for u in answered)
    assert got == planned, f"answered batches {got} are not the planned {planned}"
    out = [
        {"answers": [None] * len(job.contexts), "ended": [None] * len(job.contexts)} for job in jobs
    ]
    for u in answered:
        for i, text, ended in zip(u["indices"], u["answers"], u["ended"]):
            out[u["job"]]["answers"][i] = text
            out[u["job"]]["ended"][i] = ended
    return out
