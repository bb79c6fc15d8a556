"""Flows that wait for people, for real: the tiny preset's reward flow with
`reward.collection.annotator: people` queues its pairs in the annotation store and pauses
(Prefect `pause_flow_run`, ephemeral API); the test labels part of the batch and resumes the
flow run through the Prefect API with input, as an operator does from the UI; the flow turns the
labels into `preference_pairs` (unlabelled pairs recorded as excluded) and trains both reward
models on them.

The file name sorts after test_pipeline.py on purpose: the pipeline test must train every stage
itself, not find the tiny-preset stages this module runs already cached."""

import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.flow_runs import resume_flow_run

from flows.reward import reward_flow
from tasks.annotation.store import AnnotationStore
from tasks.io import read_dataset

pytestmark = pytest.mark.e2e


def people_overrides(db: str, **extra) -> list[str]:
    base = {
        "reward.collection.annotator": "people",
        "reward.collection.people.wait": "pause",
        "reward.collection.people.poll_s": 1,
        "reward.collection.people.timeout_s": 600,
        "reward.collection.people.store": db,
        "reward.collection.batches": 1,
        "reward.collection.helpfulness_prompts": 3,
        "reward.collection.safety_prompts": 3,
        "reward.collection.test_frac": 0.0,
        "reward.margin_ablation": "[]",
        **extra,
    }
    return [f"{k}={v}" for k, v in base.items()]


class FlowInThread:
    """The reward flow in a thread of this process (same ephemeral Prefect API as the test)."""

    def __init__(self, overrides: list[str]):
        self.result, self.error = None, None
        self.thread = threading.Thread(target=self._run, args=(overrides,), daemon=True)
        self.thread.start()

    def _run(self, overrides):
        try:
            self.result = reward_flow(preset="tiny", overrides=overrides)
        except BaseException as e:  # noqa: BLE001 - re-raised in the test's thread
            self.error = e

    def join(self, timeout: float):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the reward flow did not finish after resuming"
        if self.error is not None:
            raise self.error
        return self.result


def wait_for_paused_batch(db: str, flow: FlowInThread, timeout: float = 600) -> tuple[str, str]:
    """(batch id, flow run id) once the flow run is Paused waiting for the batch."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert flow.thread.is_alive(), f"the flow ended before pausing: {flow.error!r}"
        store = AnnotationStore(db)
        try:
            waiting = [b for b in store.batches() if b.get("flow_run_id")]
        finally:
            store.close()
        if waiting:
            run_id = waiting[0]["flow_run_id"]
            with get_client(sync_client=True) as client:
                state = client.read_flow_run(UUID(run_id)).state
            if state is not None and state.is_paused():
                return waiting[0]["batch_id"], run_id
        time.sleep(1)
    raise AssertionError("the reward flow never paused for labels")


def test_resuming_with_a_partly_labelled_batch_keeps_every_pair_and_trains(tmp_path):
    db = f"sqlite:///{tmp_path / 'labels.db'}"
    flow = FlowInThread(people_overrides(db))
    batch, run_id = wait_for_paused_batch(db, flow)
    store = AnnotationStore(db)
    items = store.items(batch)
    assert len(items) >= 4
    given = {}
    for item in items[:-2]:  # two pairs stay unlabelled
        safe = (True, False) if item["is_safety"] else (None, None)
        store.label(batch, item["pair_id"], "alice", "a", "better", *safe)
        given[item["pair_id"]] = item
    assert not store.is_complete(batch)
    store.close()
    resume_flow_run(UUID(run_id), run_input={"resume_with": "labelled_so_far", "note": "go on"})
    result = flow.join(600)

    pairs = read_dataset(result.outputs["preference_pairs"])
    excluded = read_dataset(result.outputs["preference_excluded"])
    assert set(pairs["pair_id"]) == set(given)
    for row in pairs.to_dicts():
        item = given[row["pair_id"]]
        assert row["annotator"] == "person:alice"
        assert (row["chosen"], row["rejected"]) == (item["response_a"], item["response_b"])
        assert row["rating"] == "better"
        if item["is_safety"]:
            assert (row["chosen_safe"], row["rejected_safe"]) == (True, False)
            assert row["safety_bin"] == "chosen_safe_rejected_unsafe"
    unlabelled = excluded.filter(excluded["reason"] == "pairs_unlabelled")
    assert set(unlabelled["pair_id"]) == {i["pair_id"] for i in items[-2:]}
    # both reward models were trained on these pairs
    for rm in ("helpfulness", "safety"):
        assert (Path(result.reward_models[rm]) / "model.safetensors").is_file()
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(UUID(run_id)).state.is_completed()


def test_an_rlhf_refresh_batch_waits_for_people_by_polling_the_store(tmp_path):
    """Round 2's refresh batch goes to people; with `wait: poll` (no Prefect server an outside
    page could resume through) the flow reads the store until the batch is complete; the new
    rows join the earlier (rule-annotated) batches and the refreshed RMs train on all of it."""
    from flows.rlhf import rlhf_flow

    db = f"sqlite:///{tmp_path / 'labels.db'}"
    overrides = [
        "rlhf.rounds=2",
        "rlhf.collection.annotator=people",
        "rlhf.collection.people.wait=poll",
        "rlhf.collection.people.poll_s=1",
        f"rlhf.collection.people.store={db}",
        "rlhf.collection.helpfulness_prompts=2",
        "rlhf.collection.safety_prompts=2",
    ]
    labelled: dict[str, dict] = {}
    stop = threading.Event()

    def label_when_queued():  # a person working through the batch once it appears
        while not stop.is_set():
            store = AnnotationStore(db)
            try:
                for b in store.batches():
                    for item in store.items(b["batch_id"]):
                        if item["pair_id"] not in labelled:
                            safe = (False, True) if item["is_safety"] else (None, None)
                            store.label(
                                b["batch_id"],
                                item["pair_id"],
                                "carol",
                                "b",
                                "slightly_better",
                                *safe,
                            )
                            labelled[item["pair_id"]] = item
            finally:
                store.close()
            time.sleep(0.5)

    person = threading.Thread(target=label_when_queued, daemon=True)
    person.start()
    try:
        result = rlhf_flow(preset="tiny", overrides=overrides)
    finally:
        stop.set()
        person.join(10)
    assert labelled, "no refresh batch reached the annotation store"
    pairs = read_dataset(result.outputs["preference_pairs"])
    by_people = pairs.filter(pairs["annotator"] == "person:carol")
    assert set(by_people["pair_id"]) == set(labelled)
    for row in by_people.to_dicts():
        item = labelled[row["pair_id"]]
        assert (row["chosen"], row["rejected"]) == (item["response_b"], item["response_a"])
        assert row["rating"] == "slightly_better"
    earlier = pairs.filter(pairs["annotator"] != "person:carol")
    assert earlier.height > 0 and earlier["batch"].max() < by_people["batch"].min()
    assert [r.round for r in result.rounds] == [1, 2]


def test_people_label_the_paused_flows_batch_in_a_browser_and_the_flow_trains_on_it(tmp_path):
    """The issue's acceptance test: the tiny reward flow pauses for people; two annotators
    label its batch on the annotation page in headless Chromium (keyboard only; some pairs go
    to both); the page resumes the flow run through the Prefect API when the batch is complete;
    the flow trains both RMs; `preference_pairs` holds what was clicked."""
    from tasks.annotation.web import create_app, shown_order
    from tests.e2e.test_annotation_page import press_and_submit, wait_for
    from tests.helpers.browser import chromium, screenshot, serve_app

    db = f"sqlite:///{tmp_path / 'labels.db'}"
    flow = FlowInThread(people_overrides(db, **{"reward.collection.people.double_share": 0.5}))
    batch, run_id = wait_for_paused_batch(db, flow)
    tokens = {"alice-token-0123456789": "alice", "bob-token-0123456789ab": "bob"}
    # alice prefers the left response, "better", left safe / right unsafe; bob the opposite
    keys = {"alice": (["1", "w"], ["a", "m"]), "bob": (["2", "e"], ["z", "k"])}
    clicked: dict[tuple[str, str], dict] = {}
    store = AnnotationStore(db)
    items = {i["pair_id"]: i for i in store.items(batch)}
    assert any(i["annotators_needed"] == 2 for i in items.values())
    app = create_app(store, tokens)  # the default on_complete resumes the flow run
    with serve_app(app) as base, chromium() as driver:
        for who, (choice, safety) in keys.items():
            token = next(t for t, i in tokens.items() if i == who)
            driver.get(base + "/")
            wait_for(driver, "token").send_keys(token)
            driver.find_element("id", "sign-in").click()
            assert wait_for(driver, "who").text == who
            driver.find_element("link text", "label").click()
            while "Nothing left for you" not in driver.page_source:
                action = driver.find_element("id", "label-form").get_attribute("action")
                pair = parse_qs(urlparse(action).query)["pair"][0]
                safety_item = items[pair]["is_safety"]
                if who == "alice" and safety_item and not any(k[1] == pair for k in clicked):
                    screenshot(driver, "annotation-page-flow-batch.png")
                press_and_submit(driver, choice + (safety if safety_item else []))
                left, right = shown_order(pair, who)
                clicked[who, pair] = {
                    "preferred": left if choice[0] == "1" else right,
                    "safe": {left: safety[0] == "a", right: safety[1] == "k"},
                }
            driver.find_element("xpath", "//button[text()='log out']").click()
            wait_for(driver, "token")  # signed out before the next person signs in
    store.close()
    result = flow.join(600)  # resumed by the page, not by the test

    assert {p for _, p in clicked} == set(items)
    assert sum(who == "bob" for who, _ in clicked) == sum(
        i["annotators_needed"] == 2 for i in items.values()
    )
    pairs = read_dataset(result.outputs["preference_pairs"])
    excluded = read_dataset(result.outputs["preference_excluded"])
    rows = {r["pair_id"]: r for r in pairs.to_dicts()}
    dropped = {r["pair_id"]: r for r in excluded.to_dicts()}
    assert "pairs_unlabelled" not in {r["reason"] for r in dropped.values()}
    for pair, item in items.items():
        alice = clicked["alice", pair]  # she labelled first: her label decides
        chosen = item[f"response_{alice['preferred']}"]
        other = "b" if alice["preferred"] == "a" else "a"
        if pair in dropped:  # only the paper's rule may drop a labelled pair
            assert dropped[pair]["reason"] == "pairs_chosen_unsafe"
            assert item["is_safety"] and not alice["safe"][alice["preferred"]]
            continue
        row = rows[pair]
        assert row["annotator"] == "person:alice"
        assert (row["chosen"], row["rejected"]) == (chosen, item[f"response_{other}"])
        assert row["rating"] == "better"
        if item["is_safety"]:
            assert row["chosen_safe"] == alice["safe"][alice["preferred"]]
            assert row["rejected_safe"] == alice["safe"][other]
    for rm in ("helpfulness", "safety"):
        assert (Path(result.reward_models[rm]) / "model.safetensors").is_file()
    from mlflow import MlflowClient

    from tasks.config import load_config
    from tasks.tracking import tracking_uri

    metrics = (
        MlflowClient(tracking_uri(load_config("tiny").run_dir))
        .get_run(result.mlflow_run_id)
        .data.metrics
    )
    double = sum(i["annotators_needed"] == 2 for i in items.values())
    assert metrics["collect.agreement.pairs_double"] == double
    both = [p for p, i in items.items() if i["annotators_needed"] == 2]
    agree = sum(clicked["alice", p]["preferred"] == clicked["bob", p]["preferred"] for p in both)
    assert metrics["collect.agreement.preferred"] == pytest.approx(agree / len(both))
    assert metrics["collect.people.resumed_complete"] == 1.0
