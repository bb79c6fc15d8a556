"""The annotation page through FastAPI's TestClient: login, escaping, the left/right -> a/b
mapping, safety labels, progress, revisions, and the batch-complete hook."""

import logging
import re
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tasks.annotation import web
from tasks.annotation.people import load_annotators, parse_annotators
from tasks.annotation.store import AnnotationStore
from tasks.annotation.web import RedactTokens, create_app, shown_order
from tests.unit.annotation.test_store import make_item

TOKENS = {"alice-token-0123456789": "alice", "bob-token-0123456789ab": "bob"}
RUN_ID = "6f1c2b9e-1111-4a2b-8c3d-0123456789ab"


@pytest.fixture
def store(tmp_path):
    s = AnnotationStore(f"sqlite:///{tmp_path / 'annotation.db'}")
    yield s
    s.close()


@pytest.fixture
def completed():
    return []


@pytest.fixture
def app(store, completed):
    return create_app(store, TOKENS, on_complete=lambda b, r: completed.append((b, r)))


def signed_in(app, who="alice") -> TestClient:
    client = TestClient(app)
    token = next(t for t, i in TOKENS.items() if i == who)
    response = client.post("/login", data={"token": token}, follow_redirects=False)
    assert response.status_code == 303
    return client


def test_login_with_a_token_sets_a_strict_httponly_session_cookie(app):
    client = TestClient(app)
    response = client.post(
        "/login", data={"token": "alice-token-0123456789"}, follow_redirects=False
    )
    assert response.status_code == 303 and response.headers["location"] == "/"
    cookie = response.headers["set-cookie"].lower()
    assert "annotation_session=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert "alice-token" not in cookie  # a random session id, not the token
    assert '<b id="who">alice</b>' in client.get("/").text
    by_link = TestClient(app)
    by_link.get("/login", params={"token": "bob-token-0123456789ab"})
    assert '<b id="who">bob</b>' in by_link.get("/").text
    client.post("/logout")
    assert "Sign in" in client.get("/").text


def test_an_unknown_token_gets_a_401_page_with_a_clear_message(app):
    client = TestClient(app)
    response = client.post("/login", data={"token": "guess"})
    assert response.status_code == 401 and "Unknown token" in response.text
    assert "annotation_session" not in response.headers.get("set-cookie", "")
    assert client.get("/login", params={"token": "nope"}).status_code == 401
    label = client.post("/label", params={"batch": "w1", "pair": "p1"}, data={"choice": "left"})
    assert label.status_code == 401


def test_the_page_shows_the_dialogue_and_both_responses_escaped(app, store):
    evil = "<script>alert('x')</script>"
    store.add_batch(
        "w1",
        [
            make_item(
                "p1",
                system=f"sys {evil}",
                response_a=f"A {evil}",
                response_b="B <b>bold</b>",
                turns=[{"role": "user", "content": f"hi {evil}"}],
            )
        ],
        title=f"reward 2026-W49 {evil}",
    )
    html = signed_in(app).get("/label", params={"batch": "w1"}).text
    assert "0 of 1 in batch reward 2026-W49 &lt;script&gt;" in html  # the title, escaped
    assert "<script>alert" not in html and "<b>bold</b>" not in html
    assert html.count("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;") == 4
    assert "B &lt;b&gt;bold&lt;/b&gt;" in html
    # p1 is shown b-first to alice
    assert shown_order("p1", "alice") == ("b", "a")
    assert html.index("B &lt;b&gt;") < html.index("A &lt;script")


def test_a_label_maps_the_shown_order_back_to_a_and_b(app, store):
    store.add_batch("w1", [make_item("p1", safety=True), make_item("p3")])
    client = signed_in(app)
    assert shown_order("p1", "alice") == ("b", "a") and shown_order("p3", "alice") == ("a", "b")
    form = {"choice": "left", "rating": "better", "safe_left": "safe", "safe_right": "unsafe"}
    r = client.post(
        "/label", params={"batch": "w1", "pair": "p1"}, data=form, follow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"] == "/label?batch=w1"
    client.post(
        "/label",
        params={"batch": "w1", "pair": "p3"},
        data={"choice": "left", "rating": "slightly_better", "note": "close"},
    )
    got = {r["pair_id"]: r for r in store.current_labels("w1")}
    # p1: left is b -> b preferred, b safe, a unsafe; p3: left is a
    assert (got["p1"]["preferred"], got["p1"]["safe_b"], got["p1"]["safe_a"]) == ("b", True, False)
    assert (got["p3"]["preferred"], got["p3"]["rating"], got["p3"]["note"]) == (
        "a",
        "slightly_better",
        "close",
    )


def test_a_safety_item_without_safety_labels_is_refused_with_a_message(app, store):
    store.add_batch("w1", [make_item("p1", safety=True)])
    r = signed_in(app).post(
        "/label",
        params={"batch": "w1", "pair": "p1"},
        data={"choice": "right", "rating": "better", "safe_left": "safe"},
    )
    assert r.status_code == 400 and "label each response safe or unsafe" in r.text
    bad = signed_in(app).post(
        "/label",
        params={"batch": "w1", "pair": "p1"},
        data={"choice": "right", "rating": "huge", "safe_left": "safe", "safe_right": "safe"},
    )
    assert bad.status_code == 400 and "rating must be one of" in bad.text
    assert store.current_labels("w1") == []


def test_progress_text_and_the_end_of_the_batch(app, store):
    store.add_batch("w1", [make_item("p1"), make_item("p2"), make_item("p3")])
    client = signed_in(app)
    assert "0 of 3 in batch w1" in client.get("/label", params={"batch": "w1"}).text
    client.post(
        "/label", params={"batch": "w1", "pair": "p1"}, data={"choice": "right", "rating": "better"}
    )
    page = client.get("/label", params={"batch": "w1"}).text
    assert re.search(r'id="progress">1 of 3 in batch w1<', page) and "question p2?" in page
    assert client.get("/api/progress", params={"batch": "w1"}).json()["done"] == 1
    for pair in ("p2", "p3"):
        client.post(
            "/label",
            params={"batch": "w1", "pair": pair},
            data={"choice": "left", "rating": "better"},
        )
    assert "3 of 3 in batch w1" in client.get("/label", params={"batch": "w1"}).text
    # bob: every pair already has its one person
    bob = signed_in(app, "bob")
    assert "0 of 0 in batch w1" in bob.get("/label", params={"batch": "w1"}).text
    refused = bob.post(
        "/label", params={"batch": "w1", "pair": "p1"}, data={"choice": "left", "rating": "better"}
    )
    assert refused.status_code == 409 and "already has its labels" in refused.text


def test_my_labels_page_links_to_a_revision_that_keeps_the_history(app, store):
    store.add_batch("w1", [make_item("p2")])
    client = signed_in(app)
    client.post(
        "/label", params={"batch": "w1", "pair": "p2"}, data={"choice": "left", "rating": "better"}
    )
    mine = client.get("/mine", params={"batch": "w1"}).text
    link = re.search(r'class="revise" href="([^"]+)"', mine).group(1).replace("&amp;", "&")
    page = client.get(link).text
    assert "Revising your label (revision 1)" in page and 'value="mine"' in page
    r = client.post(
        "/label",
        params={"batch": "w1", "pair": "p2"},
        data={"choice": "right", "rating": "negligibly_better", "after": "mine"},
        follow_redirects=False,
    )
    assert r.headers["location"] == "/mine?batch=w1"
    # alice sees p2 as (b, a): left was b, right is a
    assert [(h["revision"], h["preferred"]) for h in store.history("w1", "p2")] == [
        (1, "b"),
        (2, "a"),
    ]
    assert store.current_labels("w1")[0]["rating"] == "negligibly_better"


def test_on_complete_runs_exactly_once_when_the_batch_completes(app, store, completed):
    store.add_batch("w1", [make_item("p1", needed=2), make_item("p2")], flow_run_id=RUN_ID)
    alice, bob = signed_in(app), signed_in(app, "bob")
    form = {"choice": "left", "rating": "better"}
    alice.post("/label", params={"batch": "w1", "pair": "p1"}, data=form)
    alice.post("/label", params={"batch": "w1", "pair": "p2"}, data=form)
    assert completed == []
    bob.post("/label", params={"batch": "w1", "pair": "p1"}, data=form)  # completes the batch
    assert completed == [("w1", RUN_ID)]
    bob.post("/label", params={"batch": "w1", "pair": "p1"}, data=form)  # a revision
    alice.post("/label", params={"batch": "w1", "pair": "p2"}, data=form)
    assert completed == [("w1", RUN_ID)]


def test_a_failing_hook_is_logged_not_raised(store, caplog):
    def broken(batch_id, flow_run_id):
        raise RuntimeError("no Prefect API")

    app = create_app(store, TOKENS, on_complete=broken)
    store.add_batch("w1", [make_item("p1")], flow_run_id=RUN_ID)
    with caplog.at_level(logging.ERROR, logger="tasks.annotation.web"):
        r = signed_in(app).post(
            "/label",
            params={"batch": "w1", "pair": "p1"},
            data={"choice": "left", "rating": "better"},
        )
    assert r.status_code == 200 and store.is_complete("w1")
    assert "resuming flow run" in caplog.text and "no Prefect API" in caplog.text


def test_the_default_hook_resumes_the_flow_run_with_the_batch_input(monkeypatch):
    import prefect.flow_runs

    calls = []
    monkeypatch.setattr(
        prefect.flow_runs, "resume_flow_run", lambda i, run_input: calls.append((i, run_input))
    )
    web.resume_flow_run("w1", RUN_ID)
    assert calls == [
        (uuid.UUID(RUN_ID), {"resume_with": "complete", "note": "batch complete (web page)"})
    ]


def test_the_annotators_file_and_its_errors(tmp_path):
    example = Path(__file__).resolve().parents[3] / "configs" / "annotators.example.yaml"
    assert sorted(load_annotators(example).values()) == ["alice", "bob"]
    with pytest.raises(FileNotFoundError, match="annotators.example.yaml"):
        load_annotators(tmp_path / "missing.yaml")
    bad = {
        "short": {"annotators": [{"id": "ann", "token": "short"}]},
        "twice": {
            "annotators": [{"id": "ann", "token": "x" * 20}, {"id": "bo", "token": "x" * 20}]
        },
        "id": {"annotators": [{"id": "a b", "token": "x" * 20}]},
        "keys": {"annotators": [{"id": "ann", "token": "x" * 20, "password": "p"}]},
        "empty": {"annotators": []},
    }
    messages = {
        "short": "at least 16",
        "twice": "same token",
        "id": "must be 1-64",
        "keys": "exactly the keys",
        "empty": "empty",
    }
    for name, data in bad.items():
        with pytest.raises(ValueError, match=messages[name]):
            parse_annotators(data, name)


def test_login_tokens_are_redacted_from_the_access_log():
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s"',
        ("127.0.0.1", "GET", "/login?token=secret-token-123&x=1"),
        None,
    )
    assert RedactTokens().filter(record)
    assert "secret" not in record.getMessage() and "token=<redacted>&x=1" in record.getMessage()
