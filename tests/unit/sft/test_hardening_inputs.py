"""A user's SFT dialogue file saved awkwardly (issue 13): a byte-order mark, a line nested
100,000 deep, a JSON array instead of JSON Lines. Good lines are kept, bad ones quarantined with
file:line, and records_in = kept + quarantined counts every non-blank line."""

import json

from tasks.sft.sources import UserDialoguesConfig, read_user_dialogues
from tasks.textio import JSON_ARRAY_MESSAGE

DIALOGUE = {
    "messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]
}


def _read(path):
    rows, quarantine, stats = read_user_dialogues(path, "messages", "mine", UserDialoguesConfig())
    assert stats["records_in"] == stats["kept"] + stats["quarantined"]
    return rows, quarantine, stats


def test_bom_first_line_is_kept_and_deep_nesting_is_one_quarantined_line(tmp_path):
    path = tmp_path / "chats.jsonl"
    line = json.dumps(DIALOGUE).encode()
    path.write_bytes(b"\xef\xbb\xbf" + line + b"\n" + b'{"a": ' * 100_000 + b"\n" + line + b"\n")
    rows, quarantine, stats = _read(path)
    assert [r["location"] for r in rows] == [f"{path}:line 1", f"{path}:line 3"]
    assert [(q["location"], q["error"]) for q in quarantine] == [
        (f"{path}:line 2", "bad JSON: nested too deeply to parse (beyond Python's recursion limit)")
    ]
    assert stats["records_in"] == 3


def test_json_array_file_says_so_on_every_line(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps([DIALOGUE, DIALOGUE]))  # one line
    rows, quarantine, stats = _read(path)
    assert rows == [] and stats["records_in"] == stats["quarantined"] == 1
    assert quarantine[0]["error"] == JSON_ARRAY_MESSAGE
    assert quarantine[0]["location"] == f"{path}:line 1"


def test_duplicate_id_names_the_first_record(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps({"id": "a"} | DIALOGUE) + "\n" for _ in range(2)))
    rows, quarantine, stats = _read(path)
    assert [r["location"] for r in rows] == [f"{path}:line 1"]
    assert quarantine[0]["error"] == f"duplicate dialogue id 'mine:a', first at {path}:line 1"
    assert (stats["records_in"], stats["kept"], stats["quarantined"]) == (2, 1, 1)
