"""Flows that wait for people (issue 16): a collection labelled by people (`reward.collection.
annotator: people | mixed`, and each RLHF round's refresh batch) queues its pairs in the
annotation store, waits until the batch is labelled or an operator resumes the flow run, then
turns the labels into `preference_pairs` rows.

How the flow waits (`people.wait`):
- `suspend`: the flow run exits and holds no worker (Prefect `suspend_flow_run`); resuming it
  reschedules the deployment run, which starts again from the top, finds every earlier task
  cached and the labels in the store, and goes on. Only a deployment's top-level flow run can
  be suspended.
- `pause`: the process blocks in Prefect `pause_flow_run` and polls the API every `poll_s`.
- `poll`: no Prefect server that the page or an operator could reach (the ephemeral API lives
  inside this process): the flow reads the store every `poll_s` until the batch is complete.
- `auto` (default): suspend where possible, else pause where a Prefect server is configured
  (PREFECT_API_URL), else poll.

With suspend and pause, the flow waits for input (`ResumeLabels`): the annotation page sends it
when the batch's last label is written; an operator can send it from the Prefect UI's resume
form ("labelled_so_far": go on with what is labelled). A pause that times out fails the flow run
with Prefect's error; a re-run finds the labels in the store.
"""

from __future__ import annotations

import time
from typing import Literal

from prefect.context import FlowRunContext
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.input import RunInput
from prefect.logging import get_run_logger

from flows._runner import StageRunner
from tasks.preferences.collect import CollectionConfig, PeopleConfig
from tasks.results import StepOutput
from tasks.reward import people, people_steps
from tasks.reward.config import RewardConfig


class ResumeLabels(RunInput):
    """The input that resumes a flow run waiting for labels (the Prefect UI renders it as the
    resume form)."""

    resume_with: Literal["complete", "labelled_so_far"] = "labelled_so_far"
    note: str = ""


def wait_mode(wait: str) -> str:
    """The way this flow run can wait: see the module docstring."""
    if wait != "auto":
        return wait
    ctx = FlowRunContext.get()
    run = ctx.flow_run if ctx else None
    if run is not None and run.deployment_id is not None and run.parent_task_run_id is None:
        return "suspend"
    from prefect.settings import PREFECT_API_URL

    return "pause" if PREFECT_API_URL.value() else "poll"


def wait_for_labels(store_url: str, batch: str, cfg: PeopleConfig) -> str:
    """Block (or suspend) until `batch` is fully labelled or someone resumes the flow run ->
    how it ended: "complete" or "labelled_so_far"."""
    from tasks.annotation.store import AnnotationStore

    log = get_run_logger()
    store = AnnotationStore(store_url)
    try:
        if store.is_complete(batch):
            return "complete"
        mode = wait_mode(cfg.wait)
        done, total = store.progress(batch)
        log.info(
            "waiting for people (%s): %d of %d labels in batch %s; label them with "
            "`make annotate` (python -m flows.annotate serve --db %s)%s",
            mode,
            done,
            total,
            batch,
            store_url,
            "" if mode == "poll" else "; or resume this flow run from the Prefect UI",
        )
        if mode == "poll":
            deadline = time.monotonic() + cfg.timeout_s
            while not store.is_complete(batch):
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"batch {batch} was not labelled within {cfg.timeout_s} s "
                        f"({store.progress(batch)[0]} of {total} labels); run the flow again "
                        "to go on waiting (the labels are kept)"
                    )
                time.sleep(cfg.poll_s)
            return "complete"
        ctx = FlowRunContext.get()
        store.set_flow_run(batch, str(ctx.flow_run.id))
    finally:
        store.close()
    key = f"labels-{batch}"
    if mode == "suspend":
        got = suspend_flow_run(wait_for_input=ResumeLabels, timeout=cfg.timeout_s, key=key)
    else:
        got = pause_flow_run(
            wait_for_input=ResumeLabels, timeout=cfg.timeout_s, poll_interval=cfg.poll_s, key=key
        )
    log.info("resumed (%s): %s", got.resume_with, got.note or "no note")
    return got.resume_with


def collect_with_people(
    run: StageRunner,
    stage: str,
    dialogues,
    models: dict[str, str],
    tokenizer: str,
    reward: RewardConfig,
    c: CollectionConfig,
    toxicity,
    seed: int,
    first_batch: int,
    run_dir: str,
    data_dir: str,
    label_files_sha256: dict[str, str] | None,
    label: str | None = None,
) -> tuple[StepOutput, StepOutput]:
    """Queue -> wait -> labels to rows: (the queue step's output, the labels step's output with
    `preference_pairs`, `preference_excluded` and `quarantine`)."""
    from tasks.annotation.store import AnnotationStore

    store_url = c.people.store or people.default_store_url(run_dir)
    gold_sha = ""
    if c.people.gold_file:
        from tasks.hashing import sha256_of

        gold_sha = sha256_of(c.people.gold_file)
    extra = {"label": label} if label else {}
    queued = run(
        people_steps.queue_step,
        stage,
        dialogues,
        models,
        tokenizer,
        c,
        seed,
        first_batch,
        run_dir,
        store_url,
        gold_sha,
        **extra,
    )
    batch = queued.notes["batch_id"]
    how = wait_for_labels(store_url, batch, c.people)
    store = AnnotationStore(store_url)
    try:
        digest = people.labels_digest(store.current_labels(batch))
    finally:
        store.close()
    labelled = run(
        people_steps.labels_step,
        stage,
        queued.files["sampled_pairs"],
        batch,
        store_url,
        reward,
        c,
        toxicity,
        seed,
        data_dir,
        digest,
        label_files_sha256,
        **extra,
    )
    labelled.stats["collect.people.resumed_complete"] = float(how == "complete")
    return queued, labelled
