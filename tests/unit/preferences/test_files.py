"""Labels people collected: HH-RLHF JSONL (multi-line turns, shared prefixes, quarantine with
file:line) and our own Parquet contract (round trip, bad rows quarantined with file:row)."""

import json

import pyarrow.parquet as pq
import pytest

from data_contracts.base import ContractError
from data_contracts.preference_pairs import CONTRACT
from tasks.preferences.files import read_hh_jsonl, read_preference_parquet
from tasks.records import dialogue_frame

PREFIX = (
    "\n\nHuman: My sourdough is flat.\nIt rises in the fridge but not in the oven."
    "\n\nAssistant: How long do you proof it?\n\nHuman: About 4 hours.\n\nSecond line."
)
CHOSEN = "\n\nAssistant: Try a longer proof.\n\nThen bake at 250 C with steam."
REJECTED = "\n\nAssistant: Bread is hard."


def _valid(rows):
    return CONTRACT.validate(dialogue_frame(rows, "preference_pairs"))


def _write(tmp_path, lines, name="harmless.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _hh(chosen=PREFIX + CHOSEN, rejected=PREFIX + REJECTED):
    return json.dumps({"chosen": chosen, "rejected": rejected})


def test_hh_line_becomes_prompt_chosen_rejected(tmp_path):
    path = _write(tmp_path, [_hh()])
    rows, quarantine, stats = read_hh_jsonl(
        path, "helpfulness", "hh_helpful", batch=2, test_frac=0.0
    )
    assert quarantine == [] and stats["kept"] == stats["lines_in"] == 1
    row = rows[0]
    assert row["prompt"] == [
        {
            "role": "user",
            "content": "My sourdough is flat.\nIt rises in the fridge but not in the oven.",
        },
        {"role": "assistant", "content": "How long do you proof it?"},
        {"role": "user", "content": "About 4 hours.\n\nSecond line."},
    ]
    assert row["chosen"] == "Try a longer proof.\n\nThen bake at 250 C with steam."
    assert row["rejected"] == "Bread is hard."
    assert (row["rating"], row["kind"], row["safety_bin"], row["is_safety"]) == (
        "better",
        "helpfulness",
        "both_safe",
        False,
    )
    assert (row["pair_id"], row["annotator"], row["batch"], row["split"]) == (
        "hh_helpful:harmless.jsonl:1",
        "file:harmless.jsonl",
        2,
        "train",
    )
    assert row["model_chosen"] == row["model_rejected"] == "human-collected"
    _valid(rows)


def test_hh_safety_kind_reads_chosen_as_safe_and_rejected_as_unsafe(tmp_path):
    path = _write(tmp_path, [_hh(), _hh()])
    rows, _, stats = read_hh_jsonl(path, "safety", "hh_harmless", batch=0, test_frac=1.0)
    labels = {(r["chosen_safe"], r["rejected_safe"], r["safety_bin"], r["is_safety"]) for r in rows}
    assert labels == {(True, False, "chosen_safe_rejected_unsafe", True)}
    assert stats["kept_test"] == 2 and {r["split"] for r in rows} == {"test"}
    assert rows[0]["prompt_id"] == rows[1]["prompt_id"] != ""
    _valid(rows)


def test_hh_bad_lines_are_quarantined_with_file_line_and_reason(tmp_path):
    other_prefix = PREFIX.replace("4 hours", "5 hours")
    lines = [
        _hh(),
        "{not json",
        json.dumps({"chosen": PREFIX + CHOSEN}),
        "",
        _hh(rejected=other_prefix + REJECTED),
        _hh(rejected=PREFIX + CHOSEN),
        _hh(chosen="\n\nAssistant: hi"),
        json.dumps(["chosen", "rejected"]),
        _hh(rejected=PREFIX + REJECTED + "\n\nHuman: more?" + REJECTED),
    ]
    path = _write(tmp_path, lines)
    rows, quarantine, stats = read_hh_jsonl(path, "helpfulness", "hh", batch=0, test_frac=0.1)
    assert len(rows) == 1
    where = {q["location"]: q["error"] for q in quarantine}
    assert set(where) == {f"{path}:line {n}" for n in (2, 3, 5, 6, 7, 8, 9)}
    assert where[f"{path}:line 2"].startswith("bad_json:")
    assert where[f"{path}:line 3"].startswith("missing_field:")
    assert "'rejected'" in where[f"{path}:line 3"]
    assert where[f"{path}:line 5"].startswith("prefix_mismatch:")
    assert "turn 3" in where[f"{path}:line 5"]
    assert where[f"{path}:line 6"].startswith("identical_answers:")
    assert where[f"{path}:line 7"].startswith("bad_transcript: chosen:")
    assert where[f"{path}:line 8"].startswith("bad_json:")
    assert where[f"{path}:line 9"].startswith("prefix_mismatch:")
    assert stats["lines_in"] == 8 == stats["kept"] + stats["quarantined"]
    assert stats["quarantined"] == sum(v for k, v in stats.items() if k.startswith("quarantined_"))
    assert {q["source"] for q in quarantine} == {"hh"}
    _valid(rows)


def test_hh_reader_rejects_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_hh_jsonl(tmp_path / "none.jsonl", "safety", "hh", 0, 0.1)
    path = _write(tmp_path, [_hh()])
    with pytest.raises(ValueError, match="kind"):
        read_hh_jsonl(path, "harmless", "hh", 0, 0.1)


def test_parquet_round_trip_through_the_contract(tmp_path):
    rows, _, _ = read_hh_jsonl(_write(tmp_path, [_hh(), _hh()]), "safety", "hh", 1, 0.5)
    path = tmp_path / "pairs.parquet"
    pq.write_table(CONTRACT.to_arrow(_valid(rows)), path)
    back, quarantine = read_preference_parquet(path)
    assert back == rows and quarantine == []


def test_parquet_bad_rows_are_quarantined_with_file_row(tmp_path):
    rows, _, _ = read_hh_jsonl(_write(tmp_path, [_hh(), _hh(), _hh()]), "helpfulness", "hh", 1, 0.0)
    rows[1] = {**rows[1], "rating": "much_better"}
    rows.append(dict(rows[0]))  # row 4: a copy of row 1 (duplicate pair_id)
    path = tmp_path / "pairs.parquet"
    pq.write_table(CONTRACT.to_arrow(dialogue_frame(rows, "preference_pairs")), path)
    good, quarantine = read_preference_parquet(path)
    assert [r["pair_id"] for r in good] == [rows[0]["pair_id"], rows[2]["pair_id"]]
    where = {q["location"]: q["error"] for q in quarantine}
    assert set(where) == {f"{path}:row 2", f"{path}:row 4"}
    assert "rating" in where[f"{path}:row 2"] and "pair_id" in where[f"{path}:row 4"]
    _valid(good)


def test_parquet_with_wrong_columns_raises(tmp_path):
    rows, _, _ = read_hh_jsonl(_write(tmp_path, [_hh()]), "helpfulness", "hh", 1, 0.0)
    path = tmp_path / "pairs.parquet"
    table = CONTRACT.to_arrow(dialogue_frame(rows, "preference_pairs")).drop(["rating"])
    pq.write_table(table, path)
    with pytest.raises(ContractError, match="rating"):
        read_preference_parquet(path)


def test_parquet_from_before_the_ended_flags_reads_every_response_as_ended(tmp_path):
    rows, _, _ = read_hh_jsonl(_write(tmp_path, [_hh()]), "helpfulness", "hh", 1, 0.0)
    assert (rows[0]["chosen_ended"], rows[0]["rejected_ended"]) == (True, True)  # people wrote them
    path = tmp_path / "pairs.parquet"
    table = CONTRACT.to_arrow(dialogue_frame(rows, "preference_pairs"))
    pq.write_table(table.drop(["chosen_ended", "rejected_ended"]), path)  # contract 1.0 columns
    back, quarantine = read_preference_parquet(path)
    assert back == rows and quarantine == []
