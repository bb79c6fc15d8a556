"""HH-RLHF label files a user saved awkwardly (issue 13): a byte-order mark, a line nested
100,000 deep, a JSON array instead of JSON Lines. Good lines are kept, bad ones quarantined with
file:line, and lines_in = kept + quarantined counts every non-blank line."""

import json

from tasks.preferences.files import read_hh_jsonl
from tasks.textio import JSON_ARRAY_MESSAGE

PAIR = {
    "chosen": "\n\nHuman: Hi?\n\nAssistant: Hello, how can I help?",
    "rejected": "\n\nHuman: Hi?\n\nAssistant: Go away.",
}


def _read(path):
    rows, quarantine, stats = read_hh_jsonl(path, "helpfulness", "mine", batch=0, test_frac=0.0)
    assert stats["lines_in"] == stats["kept"] + stats["quarantined"] == len(rows) + len(quarantine)
    return rows, quarantine, stats


def test_bom_first_line_is_kept_and_deep_nesting_is_one_quarantined_line(tmp_path):
    path = tmp_path / "labels.jsonl"
    line = json.dumps(PAIR).encode()
    path.write_bytes(b"\xef\xbb\xbf" + line + b"\n" + b"[" * 100_000 + b"\n" + line + b"\n")
    rows, quarantine, stats = _read(path)
    assert [r["pair_id"] for r in rows] == ["mine:labels.jsonl:1", "mine:labels.jsonl:3"]
    assert [q["location"] for q in quarantine] == [f"{path}:line 2"]
    assert quarantine[0]["error"] == (
        "bad_json: nested too deeply to parse (beyond Python's recursion limit)"
    )
    assert (stats["lines_in"], stats["quarantined_bad_json"]) == (3, 1)


def test_json_array_file_says_so_on_every_line(tmp_path):
    path = tmp_path / "labels.jsonl"
    path.write_text(json.dumps([PAIR, PAIR], indent=1))
    rows, quarantine, stats = _read(path)
    n_lines = len(path.read_text().splitlines())
    assert rows == [] and stats["quarantined_bad_json"] == stats["lines_in"] == n_lines
    assert {q["error"] for q in quarantine} == {f"bad_json: {JSON_ARRAY_MESSAGE}"}
    assert quarantine[0]["location"] == f"{path}:line 1"
