"""The annotation store: idempotent batches, assignment, revisions, progress, errors, and two
store objects (the flow and the page) on one SQLite file."""

from datetime import timezone

import pytest

from tasks.annotation.store import AnnotationStore


def make_item(pair_id, needed=1, safety=False, gold=None, **extra):
    return {
        "pair_id": pair_id,
        "kind": "safety" if safety else "helpfulness",
        "is_safety": safety,
        "system": "",
        "turns": [{"role": "user", "content": f"question {pair_id}?"}],
        "response_a": f"answer A to {pair_id}",
        "response_b": f"answer B to {pair_id}",
        "annotators_needed": needed,
        "gold": gold,
        "meta": {"source": "test", "n": 1},
    } | extra


@pytest.fixture
def store(tmp_path):
    s = AnnotationStore(f"sqlite:///{tmp_path / 'annotation.db'}")
    yield s
    s.close()


def test_add_batch_is_idempotent_and_keeps_order_and_meta(store):
    assert store.add_batch("w1", [make_item("p1"), make_item("p2")], title="Week 1") == 2
    assert store.add_batch("w1", [make_item("p2"), make_item("p3"), make_item("p1")]) == 1
    items = store.items("w1")
    assert [it["pair_id"] for it in items] == ["p1", "p2", "p3"]
    assert [it["position"] for it in items] == [0, 1, 2]
    assert items[0]["meta"] == {"source": "test", "n": 1}
    assert items[0]["gold"] is None
    assert items[0]["turns"] == [{"role": "user", "content": "question p1?"}]
    batch = store.batch("w1")
    assert batch["title"] == "Week 1" and batch["items"] == 3 and batch["state"] == "open"
    assert batch["created_at"].tzinfo == timezone.utc
    assert store.batch("nope") is None
    store.set_flow_run("w1", "0b7c1f52-0000-4000-8000-000000000001")
    assert store.batch("w1")["flow_run_id"].startswith("0b7c1f52")
    assert [b["batch_id"] for b in store.batches()] == ["w1"]


def test_next_item_follows_added_order_and_double_annotation(store):
    gold = {"preferred": "a", "rating": "better", "safe_a": None, "safe_b": None}
    store.add_batch(
        "w1", [make_item("single"), make_item("double", needed=2), make_item("gold", gold=gold)]
    )
    assert store.next_item("w1", "alice")["pair_id"] == "single"
    store.label("w1", "single", "alice", "a", "better", None, None)
    # single is full now: bob skips it; double needs a second person
    assert store.next_item("w1", "bob")["pair_id"] == "double"
    assert store.next_item("w1", "alice")["pair_id"] == "double"
    store.label("w1", "double", "alice", "b", "slightly_better", None, None)
    store.label("w1", "double", "bob", "b", "better", None, None)
    assert store.next_item("w1", "carol")["pair_id"] == "gold"  # gold: everyone gets it
    store.label("w1", "gold", "alice", "a", "better", None, None)
    assert store.next_item("w1", "alice") is None
    assert store.next_item("w1", "bob")["pair_id"] == "gold"
    assert store.next_item("w1", "carol")["pair_id"] == "gold"


def test_a_revision_keeps_the_history_and_current_labels_read_the_latest(store):
    store.add_batch("w1", [make_item("p1", needed=2), make_item("p2")])
    first = store.label("w1", "p1", "alice", "a", "better", None, None, note="first")
    store.label("w1", "p1", "bob", "b", "better", None, None)
    second = store.label("w1", "p1", "alice", "b", "significantly_better", None, None)
    assert second != first
    current = store.current_labels("w1")
    assert [
        (r["pair_id"], r["annotator"], r["preferred"], r["rating"], r["revision"]) for r in current
    ] == [("p1", "alice", "b", "significantly_better", 2), ("p1", "bob", "b", "better", 1)]
    assert current[0]["is_gold"] is False and current[0]["labelled_at"].tzinfo == timezone.utc
    history = store.history("w1", "p1")
    assert [(r["annotator"], r["revision"], r["preferred"]) for r in history] == [
        ("alice", 1, "a"),
        ("bob", 1, "b"),
        ("alice", 2, "b"),
    ]
    assert history[0]["note"] == "first" and history[0]["label_id"] == first


def test_progress_and_is_complete(store):
    gold = {"preferred": "b", "rating": "better", "safe_a": None, "safe_b": None}
    store.add_batch("w1", [make_item("p1"), make_item("p2", needed=2), make_item("g", gold=gold)])
    assert store.progress("w1") == (0, 3)
    assert store.progress("w1", "alice") == (0, 3)
    store.label("w1", "p1", "alice", "a", "better", None, None)
    store.label("w1", "p2", "alice", "a", "better", None, None)
    # bob: p1 is full (not his), p2 still needs a second person, g is gold
    assert store.progress("w1", "bob") == (0, 2)
    assert store.progress("w1", "alice") == (2, 3)
    assert store.progress("w1") == (1, 3) and not store.is_complete("w1")
    store.label("w1", "p2", "bob", "a", "better", None, None)
    store.label("w1", "p2", "bob", "b", "better", None, None)  # a revision: still one person
    assert store.progress("w1") == (2, 3)
    store.label("w1", "g", "bob", "b", "better", None, None)
    assert store.progress("w1") == (3, 3) and store.is_complete("w1")
    assert store.progress("w1", "bob") == (2, 2)
    assert store.batch("w1")["state"] == "complete"


def test_wrong_input_raises_clear_errors(store):
    store.add_batch("w1", [make_item("p1"), make_item("s1", safety=True)])
    with pytest.raises(KeyError, match="w1.*nope"):
        store.label("w1", "nope", "alice", "a", "better", None, None)
    with pytest.raises(KeyError, match="other.*p1"):
        store.label("other", "p1", "alice", "a", "better", None, None)
    with pytest.raises(ValueError, match="preferred"):
        store.label("w1", "p1", "alice", "left", "better", None, None)
    with pytest.raises(ValueError, match="rating"):
        store.label("w1", "p1", "alice", "a", "much_better", None, None)
    with pytest.raises(ValueError, match="safe_b"):
        store.label("w1", "s1", "alice", "a", "better", True, None)
    with pytest.raises(ValueError, match="kind"):
        store.add_batch("w2", [make_item("x", kind="fun")])
    with pytest.raises(ValueError, match="annotators_needed"):
        store.add_batch("w2", [make_item("x", needed=3)])
    with pytest.raises(ValueError, match="last turn"):
        store.add_batch("w2", [make_item("x", turns=[{"role": "assistant", "content": "hi"}])])
    with pytest.raises(KeyError, match="w9"):
        store.set_flow_run("w9", "x")
    with pytest.raises(KeyError, match="w9"):
        store.is_complete("w9")
    assert store.current_labels("w1") == [] and store.batch("w2") is None


def test_two_stores_on_one_sqlite_file_see_each_others_writes(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    flow, page = AnnotationStore(url), AnnotationStore(url)
    try:
        flow.add_batch("w1", [make_item("p1")], flow_run_id="run-1")
        assert page.next_item("w1", "alice")["pair_id"] == "p1"
        page.label("w1", "p1", "alice", "b", "negligibly_better", None, None)
        assert flow.is_complete("w1")
        assert flow.current_labels("w1")[0]["rating"] == "negligibly_better"
        with flow._engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
    finally:
        flow.close()
        page.close()


def test_in_memory_store_works_across_threads():
    import threading

    store = AnnotationStore("sqlite://")
    store.add_batch("w1", [make_item("p1")])
    worker = threading.Thread(
        target=store.label, args=("w1", "p1", "ann", "a", "better", None, None)
    )
    worker.start()
    worker.join()
    assert store.progress("w1") == (1, 1)
