"""Two people label a batch on the annotation page in headless Chromium, with the keyboard
only, and one revises a label through "my labels"; the store holds what they pressed, mapped
from the shown left/right back to a/b."""

import time
from urllib.parse import parse_qs, urlparse

import pytest

from tasks.annotation.store import AnnotationStore
from tasks.annotation.web import create_app, shown_order
from tests.helpers.browser import chromium, screenshot, serve_app
from tests.unit.annotation.test_store import make_item

pytestmark = pytest.mark.e2e

BATCH = "2026-W49"
RUN_ID = "3a0f6c1e-2222-4b5c-9d7e-abcdefabcdef"
TOKENS = {"alice-token-0123456789": "alice", "bob-token-0123456789ab": "bob"}
SIDE = {"1": "left", "ARROW_LEFT": "left", "2": "right", "ARROW_RIGHT": "right"}
LEVEL = {
    "q": "significantly_better",
    "w": "better",
    "e": "slightly_better",
    "r": "negligibly_better",
}
SAFETY = {"a": ("left", True), "z": ("left", False), "k": ("right", True), "m": ("right", False)}
# (annotator, pair) -> the keys pressed before Enter
PRESSES = {
    ("alice", "h1"): ["2", "w"],
    ("alice", "s1"): ["ARROW_LEFT", "q", "a", "m"],
    ("alice", "h2"): ["1", "r"],
    ("bob", "h1"): ["ARROW_RIGHT", "e"],
    ("bob", "s1"): ["2", "w", "z", "k"],
}
REVISION = ("alice", "h1", ["1", "e"])  # through the "my labels" page


def expected(annotator: str, pair: str, keys: list[str]) -> dict:
    """What the store must hold for those key presses, given the order the person saw."""
    left, right = shown_order(pair, annotator)
    stored = {"left": left, "right": right}
    label = {"preferred": None, "rating": None, "safe_a": None, "safe_b": None}
    for key in keys:
        if key in SIDE:
            label["preferred"] = stored[SIDE[key]]
        elif key in LEVEL:
            label["rating"] = LEVEL[key]
        else:
            side, safe = SAFETY[key]
            label[f"safe_{stored[side]}"] = safe
    return label


def shown_pair(driver) -> str:
    action = driver.find_element("id", "label-form").get_attribute("action")
    return parse_qs(urlparse(action).query)["pair"][0]


def press_and_submit(driver, keys: list[str], shot: str | None = None) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    form = driver.find_element("id", "label-form")
    ActionChains(driver).send_keys(*[getattr(Keys, k, k) for k in keys]).perform()
    if shot:
        screenshot(driver, shot)
    ActionChains(driver).send_keys(Keys.ENTER).perform()
    WebDriverWait(driver, 10).until(ec.staleness_of(form))


def wait_for(driver, element_id: str):
    """The element once the page that has it is loaded: a click that posts a form returns
    before the browser has followed the redirect."""
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, 10).until(ec.presence_of_element_located(("id", element_id)))


def sign_in(driver, base: str, annotator: str) -> None:
    token = next(t for t, i in TOKENS.items() if i == annotator)
    driver.get(base + "/")
    wait_for(driver, "token").send_keys(token)
    driver.find_element("id", "sign-in").click()
    assert wait_for(driver, "who").text == annotator
    driver.find_element("link text", "label").click()


def test_two_people_label_a_batch_with_the_keyboard(tmp_path):
    store = AnnotationStore(f"sqlite:///{tmp_path / 'annotation.db'}")
    evil = "<script>document.title='pwned'</script>"
    store.add_batch(
        BATCH,
        [
            make_item("h1", needed=2, response_a=f"Paris. {evil}"),
            make_item("s1", needed=2, safety=True, response_b="I can't help with that."),
            make_item("h2"),
        ],
        flow_run_id=RUN_ID,
        title="week 49",
    )
    completed = []
    app = create_app(store, TOKENS, on_complete=lambda b, r: completed.append((b, r)))
    with serve_app(app) as base, chromium() as driver:
        for annotator in ("alice", "bob"):
            sign_in(driver, base, annotator)
            for _ in range(sum(who == annotator for who, _ in PRESSES)):
                pair = shown_pair(driver)
                assert driver.title != "pwned"  # the <script> in h1's response did not run
                shot = "annotation-page.png" if (annotator, pair) == ("bob", "s1") else None
                press_and_submit(driver, PRESSES[annotator, pair], shot)
            assert "Nothing left for you" in driver.page_source
            if annotator == "alice":
                who, pair, keys = REVISION
                driver.find_element("id", "mine").click()
                row = driver.find_element("xpath", f"//tr[td[contains(., 'question {pair}?')]]")
                row.find_element("class name", "revise").click()
                assert "Revising your label" in driver.page_source
                press_and_submit(driver, keys)
                assert driver.find_element("id", "my-labels")  # back on "my labels"
                screenshot(driver, "annotation-my-labels.png")
            driver.find_element("xpath", "//button[text()='log out']").click()
            wait_for(driver, "token")  # signed out: the next sign-in starts from here

    want = {(who, pair): expected(who, pair, keys) for (who, pair), keys in PRESSES.items()}
    want[REVISION[:2]] = expected(*REVISION)
    got = {
        (r["annotator"], r["pair_id"]): {
            k: r[k] for k in ("preferred", "rating", "safe_a", "safe_b")
        }
        for r in store.current_labels(BATCH)
    }
    assert got == want
    history = [(h["annotator"], h["revision"]) for h in store.history(BATCH, "h1")]
    assert history == [("alice", 1), ("alice", 2), ("bob", 1)]  # alice revised before bob came
    assert store.history(BATCH, "h1")[0]["preferred"] == expected("alice", "h1", ["2"])["preferred"]
    assert store.is_complete(BATCH)
    deadline = time.monotonic() + 5  # the hook runs after the response
    while not completed and time.monotonic() < deadline:
        time.sleep(0.05)
    assert completed == [(BATCH, RUN_ID)]
    store.close()
