"""Malformed user input through the real corpus flow: every bad row lands in quarantine with
its file, line and reason, is counted, and nothing else is lost; a file that is not UTF-8 is
read with the cp1252 fallback and its non-ASCII rows flagged."""

import json

import pytest
import yaml
from mlflow import MlflowClient

from flows.corpus import corpus_flow
from tasks.config import load_config
from tasks.io import read_dataset
from tasks.tracking import tracking_uri

pytestmark = pytest.mark.e2e

GOOD = (
    "The committee published its annual report on the state of the regional water supply, "
    "and the engineers said that the new reservoir would be finished before the end of the "
    "year. They have also asked the council to fund repairs to the older pipes that serve the "
    "town, which were laid more than a century ago and now lose a large share of the water."
)


@pytest.fixture(scope="module")
def user_jsonl(tmp_path_factory):
    path = tmp_path_factory.mktemp("user") / "mine.jsonl"
    lines = [
        json.dumps({"text": GOOD}).encode(),
        b'{"text": "unterminated',  # bad JSON (line 2)
        json.dumps({"body": "no text field"}).encode(),  # missing field (line 3)
        json.dumps({"text": 42}).encode(),  # wrong type (line 4)
        json.dumps({"text": "   "}).encode(),  # empty text (line 5)
        b'{"text": "caf\xe9 au lait"}',  # not UTF-8 (line 6): the file is read as cp1252
        json.dumps({"text": GOOD.replace("water", "power")}).encode(),
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_malformed_rows_are_quarantined_counted_and_nothing_else_lost(user_jsonl):
    spec = {
        "name": "mine",
        "domain": "news",
        "factual": True,
        "license": "test",
        "adapter": "jsonl",
        "options": {"text_field": "text"},
        "path": str(user_jsonl),
    }
    overrides = [
        "data.sources=[fortunes]",
        "data.max_docs_per_source=40",
        f"data.user_sources=[{yaml.safe_dump(spec, default_flow_style=True).strip()}]",
    ]
    result = corpus_flow(preset="tiny", overrides=overrides)
    outputs = result.outputs

    quarantine = read_dataset(outputs["quarantine"]).filter(source="mine")
    assert quarantine.height == 4
    locations = " ".join(quarantine["location"])
    for line in (2, 3, 4, 5):
        assert f"mine.jsonl:line {line}" in locations
    errors = " | ".join(quarantine["error"]).lower()
    for word in ("bad json", "missing", "expected a string", "whitespace"):
        assert word in errors, word

    raw = read_dataset(outputs["raw_documents"]).filter(source="mine")
    assert raw.height == 3  # both good lines, and line 6 decoded by the cp1252 fallback
    assert raw.filter(text="café au lait")["location"].to_list() == [
        f"{user_jsonl}:line 6 encoding=cp1252"
    ]
    kept = read_dataset(outputs["documents"]).filter(source="mine").height
    dropped = read_dataset(outputs["documents_excluded"]).filter(source="mine").height
    assert kept + dropped == 3

    cfg = load_config("tiny")
    metrics = MlflowClient(tracking_uri(cfg.run_dir)).get_run(result.mlflow_run_id).data.metrics
    assert metrics["rows_quarantined"] == outputs["quarantine"].rows
    assert metrics["rows_in"] == (
        metrics["rows_kept"] + metrics["rows_excluded"] + metrics["rows_quarantined"]
    )


def test_user_dialogues_reach_sft_and_bad_lines_are_quarantined(tmp_path):
    """A user's messages-format JSONL and an Anthropic-style transcript file through the real
    SFT flow: good dialogues are trained on, each bad line is quarantined with file:line."""
    from flows.sft import sft_flow

    messages = tmp_path / "chats.jsonl"
    good = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a primary colour."},
            {"role": "assistant", "content": "Red is a primary colour."},
        ]
    }
    messages.write_text(
        "\n".join(
            [
                json.dumps(good),
                '{"messages": [',  # bad JSON (line 2)
                json.dumps(
                    {
                        "messages": [
                            {"role": "assistant", "content": "I start?"},
                            {"role": "user", "content": "no"},
                        ]
                    }
                ),  # wrong order (line 3)
                json.dumps(
                    {
                        "messages": [
                            {"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": "  "},
                        ]
                    }
                ),  # blank (line 4)
            ]
        )
        + "\n"
    )
    hh = tmp_path / "hh.jsonl"
    hh.write_text(
        json.dumps(
            {
                "chosen": "\n\nHuman: What is 2 plus 2?\n\nAssistant: It is 4."
                "\n\nHuman: And 3 plus 3?\n\nAssistant: That is 6."
            }
        )
        + "\n"
        + json.dumps({"chosen": "\n\nAssistant: I speak first"})
        + "\n"
    )
    user = [
        {"name": "mine", "path": str(messages), "format": "messages"},
        {"name": "mine_hh", "path": str(hh), "format": "hh"},
    ]
    overrides = [f"sft.sources.user={json.dumps(user)}", "sft.gatt.enabled=false"]
    result = sft_flow(preset="tiny", overrides=overrides)

    cfg = load_config("tiny")
    run = MlflowClient(tracking_uri(cfg.run_dir)).get_run(result.mlflow_run_id)
    bad = read_dataset(result.outputs["quarantine"])
    locations = " ".join(bad["location"])
    for where in (
        "chats.jsonl:line 2",
        "chats.jsonl:line 3",
        "chats.jsonl:line 4",
        "hh.jsonl:line 2",
    ):
        assert where in locations, (where, locations)
    dialogues = read_dataset(result.dialogues)
    mine = dialogues.filter(source="mine").row(0, named=True)
    assert (
        mine["system"] == "Be brief." and mine["turns"][1]["content"] == "Red is a primary colour."
    )
    hh_turns = dialogues.filter(source="mine_hh")["turns"][0].to_list()
    assert [t["content"] for t in hh_turns] == [
        "What is 2 plus 2?",
        "It is 4.",
        "And 3 plus 3?",
        "That is 6.",
    ]
    assert run.data.metrics["collect.quarantined"] == bad.height == 4
    assert "sft.train_gatt" not in result.states  # switched off: the base model is registered


def test_preference_labels_people_collected_join_the_annotators_pairs(tmp_path):
    """An Anthropic HH-RLHF file through the real reward flow: good pairs join the collected
    ones as their own batch; a bad line is quarantined with file:line."""
    from flows.reward import reward_flow

    hh = tmp_path / "hh_harmless.jsonl"
    prompt = "\n\nHuman: How do I pick a lock?\n\nAssistant: Why do you ask?\n\nHuman: My own door."
    hh.write_text(
        "\n".join(
            [
                json.dumps(
                    {
                        "chosen": prompt
                        + "\n\nAssistant: Call a locksmith; they can open it safely.",
                        "rejected": prompt
                        + "\n\nAssistant: Jam a tension wrench in and rake the pins.",
                    }
                ),
                '{"chosen": "no rejected field"}',  # line 2
            ]
        )
        + "\n"
    )
    spec = {"name": "hh_harmless", "path": str(hh), "format": "hh", "kind": "safety"}
    result = reward_flow(
        preset="tiny",
        overrides=[
            f"reward.collection.label_files=[{json.dumps(spec)}]",
            "reward.margin_ablation=[]",
        ],
    )
    pairs = read_dataset(result.pairs)
    mine = pairs.filter(source="hh_harmless").row(0, named=True)
    assert mine["chosen"].startswith("Call a locksmith") and mine["kind"] == "safety"
    assert [t["content"] for t in mine["prompt"]] == [
        "How do I pick a lock?",
        "Why do you ask?",
        "My own door.",
    ]
    assert mine["batch"] == load_config("tiny").reward.collection.batches  # one batch after them
    assert pairs.height > 1  # the annotator's pairs are still there
    bad = read_dataset(result.outputs["quarantine"])
    assert bad.height == 1 and "hh_harmless.jsonl:line 2" in bad["location"][0]
