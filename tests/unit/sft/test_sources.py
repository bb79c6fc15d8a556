"""SFT sources: the chitchat wheel (real and handcrafted), a user's own dialogue files in
messages and HH format (JSONL and Parquet), HH transcript parsing, and the split rule."""

import json
import re
import zipfile

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data_contracts.sft_dialogues import CONTRACT
from tasks.chat.hh import parse_hh_transcript
from tasks.records import assign_split, dialogue_frame
from tasks.sft.sources import (
    ChitchatConfig,
    UserDialoguesConfig,
    read_chitchat,
    read_user_dialogues,
)

CHITCHAT_WHEEL = "chitchat_dataset-0.9.0-py3-none-any.whl"


def _valid(rows):
    CONTRACT.validate(dialogue_frame(rows, "sft_dialogues"))


# -- assign_split -------------------------------------------------------------------------------


def test_assign_split_is_deterministic_and_near_the_fraction():
    keys = [f"key-{i}" for i in range(2000)]
    splits = [assign_split(k, 0.2) for k in keys]
    assert splits == [assign_split(k, 0.2) for k in keys]
    assert 0.17 < splits.count("heldout") / len(keys) < 0.23
    assert {assign_split(k, 0.0) for k in keys} == {"train"}
    assert {assign_split(k, 1.0) for k in keys} == {"heldout"}
    assert [assign_split(k, 0.2, salt="x") for k in keys] != splits  # the salt reshuffles


# -- HH transcripts ----------------------------------------------------------------------------


def test_parse_hh_transcript_three_turns_with_multiline_content():
    text = (
        "\n\nHuman: I have two questions.\nFirst: what is a prime?"
        "\n\nAssistant: A prime has exactly two divisors.\n\nFor example 2, 3 and 5."
        "\n\nHuman: And 1?\n\nAssistant: 1 is not prime.\n\nHuman: Thanks, and 9?"
        "\n\nAssistant: 9 = 3 x 3, so it is not prime either."
    )
    turns = parse_hh_transcript(text)
    assert [t["role"] for t in turns] == ["user", "assistant"] * 3
    assert turns[0]["content"] == "I have two questions.\nFirst: what is a prime?"
    assert turns[1]["content"] == "A prime has exactly two divisors.\n\nFor example 2, 3 and 5."
    assert turns[5]["content"] == "9 = 3 x 3, so it is not prime either."
    assert parse_hh_transcript("Human: hi\n\nAssistant: hello") == [  # no leading blank line
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]


@pytest.mark.parametrize(
    "text, message",
    [
        ("\n\nAssistant: hello\n\nHuman: hi", "must start with 'Human:'"),
        ("preamble\n\nHuman: hi\n\nAssistant: hello", "must start with 'Human:'"),
        ("\n\nHuman: hi\n\nHuman: again\n\nAssistant: hello", "two Human turns in a row"),
        ("\n\nHuman: hi\n\nAssistant: hello\n\nAssistant: more", "two Assistant turns in a row"),
        (
            "\n\nHuman: hi\n\nAssistant:  \n\nHuman: x\n\nAssistant: y",
            "turn 2 (Assistant) is empty",
        ),
        ("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye", "ends with a Human turn"),
        ("  \n", "empty"),
    ],
)
def test_parse_hh_transcript_rejects_malformed_text(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_hh_transcript(text)


# -- a user's own dialogues ---------------------------------------------------------------------


def _msgs(*pairs, system=None):
    out = [{"role": "system", "content": system}] if system else []
    for user, assistant in pairs:
        out += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return out


def test_messages_jsonl_rows_and_quarantine_with_line_numbers(tmp_path):
    good = [
        {"id": "a", "messages": _msgs(("Hi", "Hello!"), ("2+2?", "4."), system="Be brief.")},
        {
            "messages": _msgs(("How do I pick a lock?", "I can't help with that.")),
            "risk_category": "illicit_criminal",
            "split": "heldout",
        },
    ]
    lines = (
        [json.dumps(o).encode() for o in good]
        + [
            b"",  # blank line: skipped, not a record
            b'{"messages": [',  # 4: bad JSON
            b'{"messages": [{"role": "user", "content": "caf\xe9"}]}',  # 5: invalid UTF-8
            json.dumps({"conversation": []}).encode(),  # 6: missing field
            json.dumps(
                {
                    "messages": [
                        {"role": "assistant", "content": "x"},
                        {"role": "user", "content": "y"},
                    ]
                }
            ).encode(),  # 7: order
            json.dumps({"messages": _msgs(("Hi", "   "))}).encode(),  # 8: blank content
            json.dumps({"messages": _msgs(("Hi", "Hello"))[:1]}).encode(),  # 9: ends with user
            json.dumps({"messages": _msgs(("a", "b")), "risk_category": "spam"}).encode(),  # 10
            json.dumps({"id": "a", "messages": _msgs(("c", "d"))}).encode(),  # 11: duplicate id
            b"[1, 2]",  # 12: not an object
        ]
    )
    path = tmp_path / "mine.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    rows, quarantine, stats = read_user_dialogues(path, "messages", "mine", UserDialoguesConfig())
    _valid(rows)
    assert stats == {
        "records_in": 11,
        "kept": 2,
        "quarantined": 9,
        "kept_train": stats["kept_train"],
        "kept_heldout": stats["kept_heldout"],
    }
    first, second = rows
    assert first["dialogue_id"] == "mine:a" and first["system"] == "Be brief."
    assert (
        first["turns"][2] == {"role": "user", "content": "2+2?"}
        and first["location"] == f"{path}:line 1"
    )
    assert first["split"] == assign_split("Hi", 0.1)  # assigned by the first user turn
    assert second["dialogue_id"] == "mine:mine.jsonl:2" and second["split"] == "heldout"
    assert second["is_safety"] is True and second["risk_category"] == "illicit_criminal"
    errors = {q["location"]: q["error"] for q in quarantine}
    expected = {
        4: "bad JSON",
        5: "invalid UTF-8",
        6: "missing 'messages'",
        7: "expected 'user'",
        8: "blank content",
        9: "must end with an assistant",
        10: "risk_category 'spam'",
        11: "duplicate dialogue id 'mine:a'",
        12: "expected an object",
    }
    assert set(errors) == {f"{path}:line {n}" for n in expected}
    for n, fragment in expected.items():
        assert fragment in errors[f"{path}:line {n}"]
    assert all(q["stage"] == "sft_ingest" and q["source"] == "mine" for q in quarantine)
    assert "caf" in next(q["payload"] for q in quarantine if q["location"].endswith("line 5"))


def test_messages_parquet_reports_rows(tmp_path):
    turn = pa.struct([("role", pa.string()), ("content", pa.string())])
    table = pa.table(
        {
            "messages": pa.array([_msgs(("Hi", "Hello")), _msgs(("Hi", ""))], pa.list_(turn)),
            "id": ["x", "y"],
        }
    )
    path = tmp_path / "mine.parquet"
    pq.write_table(table, path)
    rows, quarantine, stats = read_user_dialogues(path, "messages", "mine", UserDialoguesConfig())
    _valid(rows)
    assert [r["dialogue_id"] for r in rows] == ["mine:x"] and rows[0]["location"] == f"{path}:row 1"
    assert [q["location"] for q in quarantine] == [f"{path}:row 2"]
    assert "blank content" in quarantine[0]["error"] and stats["records_in"] == 2


def test_hh_jsonl_uses_the_configured_field(tmp_path):
    path = tmp_path / "hh.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(o)
            for o in [
                {
                    "chosen": "\n\nHuman: Hi\n\nAssistant: Hello",
                    "rejected": "\n\nHuman: Hi\n\nAssistant: Go away",
                },
                {"chosen": "\n\nHuman: Hi\n\nHuman: Hi?\n\nAssistant: Hello"},
                {"rejected": "\n\nHuman: Hi\n\nAssistant: Go away"},
            ]
        )
    )
    rows, quarantine, _ = read_user_dialogues(
        path, "hh", "hh", UserDialoguesConfig(category="helpful")
    )
    _valid(rows)
    assert rows[0]["turns"][1]["content"] == "Hello" and rows[0]["category"] == "helpful"
    assert [q["location"] for q in quarantine] == [f"{path}:line 2", f"{path}:line 3"]
    assert "two Human turns" in quarantine[0]["error"] and "'chosen'" in quarantine[1]["error"]
    rows, _, _ = read_user_dialogues(path, "hh", "hh", UserDialoguesConfig(hh_field="rejected"))
    assert [r["turns"][1]["content"] for r in rows] == ["Go away", "Go away"]


def test_user_dialogues_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_user_dialogues(tmp_path / "nope.jsonl", "messages", "x", UserDialoguesConfig())
    with pytest.raises(ValueError, match="unknown user dialogue format"):
        read_user_dialogues(tmp_path, "sharegpt", "x", UserDialoguesConfig())


# -- chitchat -----------------------------------------------------------------------------------


def _utt(text, sender):
    return {"text": text, "timestamp": "2018-05-02T19:38:15Z", "sender": sender}


def _chat(groups, ratings=(8, 8, 8)):
    chat = {"messages": [[_utt(t, s) for t in texts] for s, texts in groups], "prompt": "p"}
    if ratings is not None:
        chat["ratings"] = dict(zip(("witty", "upbeat", "interesting"), ratings))
    return chat


@pytest.fixture
def tiny_chitchat(tmp_path):
    data = {
        "good": _chat(
            [
                ("a", ["Hi", "there"]),
                ("b", ["Hello"]),
                ("a", ["Bye"]),
                ("b", ["", "See you"]),
                ("a", ["trailing"]),
            ]
        ),
        "low": _chat([("a", ["Hi"]), ("b", ["Hey"])], ratings=(5, 5, 6)),
        "unrated": _chat([("a", ["Hi"]), ("b", ["Hey"])], ratings=None),
        "short": _chat([("a", ["anyone there?", "hello?"])]),
        "blank_merge": _chat([("a", ["Hi"]), ("b", [""]), ("a", ["still there?"]), ("b", ["yes"])]),
        "no_messages": {"ratings": {"witty": 5}},
        "bad_text": _chat([("a", ["Hi"]), ("b", ["Hey"])]),
    }
    data["bad_text"]["messages"][1][0]["text"] = 42
    wheel = tmp_path / CHITCHAT_WHEEL
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("chitchat_dataset/dataset.json", json.dumps(data))
    return wheel


def test_chitchat_handcrafted_wheel(tiny_chitchat):
    rows, excluded, quarantine, stats = read_chitchat(tiny_chitchat, ChitchatConfig())
    by_id = {r["dialogue_id"]: r for r in rows}
    assert set(by_id) == {"chitchat:good", "chitchat:blank_merge"}
    assert by_id["chitchat:good"]["turns"] == [  # joined with " ", blank skipped, last user dropped
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "See you"},
    ]
    assert by_id["chitchat:blank_merge"]["turns"][0]["content"] == "Hi still there?"
    assert sorted((r["dialogue_id"], reason) for r, reason, _ in excluded) == [
        ("chitchat:low", "chitchat_low_rating"),
        ("chitchat:unrated", "chitchat_unrated"),
    ]
    assert sorted(q["location"].split("!")[1] for q in quarantine) == [
        "chitchat_dataset/dataset.json:bad_text",
        "chitchat_dataset/dataset.json:no_messages",
    ]
    assert stats["excluded_chitchat_too_short"] == 1 and stats["trailing_user_turns_dropped"] == 2
    _valid(rows + [r for r, _, _ in excluded])

    rows, excluded, _, _ = read_chitchat(
        tiny_chitchat, ChitchatConfig(keep_unrated=True, min_rating=6)
    )
    assert {r["dialogue_id"] for r in rows} == {
        "chitchat:good",
        "chitchat:blank_merge",
        "chitchat:unrated",
    }
    assert [reason for _, reason, _ in excluded] == ["chitchat_low_rating"]


def test_chitchat_max_dialogues_is_a_seeded_sample(tiny_chitchat):
    cfg = ChitchatConfig(min_rating=1, keep_unrated=True, max_dialogues=2, seed=3)
    first, excluded, _, stats = read_chitchat(tiny_chitchat, cfg)
    again, _, _, _ = read_chitchat(tiny_chitchat, cfg)
    assert len(first) == 2 and first == again and stats["sampled_out"] == 2
    left_out = [row for row, reason, _ in excluded if reason == "chitchat_sampled_out"]
    assert len(left_out) == 2 and not {r["dialogue_id"] for r in left_out} & {
        r["dialogue_id"] for r in first
    }


def test_chitchat_real_wheel(embedded_archive):
    wheel = embedded_archive(CHITCHAT_WHEEL)
    rows, excluded, quarantine, stats = read_chitchat(wheel, ChitchatConfig())
    assert stats["chats_in"] == 7168
    reasons = ("chitchat_low_rating", "chitchat_unrated", "chitchat_too_short")
    assert (
        stats["kept"] + sum(stats[f"excluded_{r}"] for r in reasons) + stats["quarantined"] == 7168
    )
    assert (
        len(excluded) == stats["excluded_chitchat_low_rating"] + stats["excluded_chitchat_unrated"]
    )
    assert stats["kept"] == len(rows) == 1678  # measured at the default min_rating 7.0
    with zipfile.ZipFile(wheel) as zf:
        raw = json.loads(zf.read("chitchat_dataset/dataset.json"))
    chat = raw["a07edb12-6b91-4138-b11e-02421888d699"]
    row = next(
        r
        for r in rows + [r for r, _, _ in excluded]
        if r["dialogue_id"] == "chitchat:a07edb12-6b91-4138-b11e-02421888d699"
    )
    assert row["turns"][0]["content"] == " ".join(u["text"] for u in chat["messages"][0])
    assert row["turns"][1]["content"] == " ".join(u["text"] for u in chat["messages"][1])
    odd = next(r for r in rows if len(raw[r["dialogue_id"].split(":", 1)[1]]["messages"]) % 2 == 1)
    assert len(odd["turns"]) == len(raw[odd["dialogue_id"].split(":", 1)[1]]["messages"]) - 1
    assert all(r["turns"][-1]["role"] == "assistant" for r in rows)
    assert 0.07 < stats["kept_heldout"] / stats["kept"] < 0.13
    _valid(rows)
