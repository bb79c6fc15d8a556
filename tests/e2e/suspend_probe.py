"""A flow deployed by tests/e2e/test_suspend.py: it waits for an annotation batch exactly as
the collection flows do (flows/people.py wait_for_labels, `wait: auto`), so that a deployment's
top-level run is suspended."""

from prefect import flow

from flows.people import wait_for_labels
from tasks.preferences.collect import PeopleConfig


@flow(name="labels-wait-probe")
def wait_probe(store_url: str, batch: str) -> str:
    return wait_for_labels(store_url, batch, PeopleConfig(wait="auto", poll_s=1, timeout_s=600))
