"""Browser tests' plumbing: an ASGI app served by uvicorn on a free 127.0.0.1 port in a thread,
and Debian's headless Chromium driven through selenium and /usr/bin/chromedriver.

    with serve_app(app) as base_url, chromium() as driver:
        driver.get(base_url + "/")

Both are stopped by their own handles (the uvicorn Server object, the WebDriver session and
the chromedriver process selenium started), never by a process name.
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@contextmanager
def serve_app(app, start_timeout_s: float = 20.0) -> Iterator[str]:
    """Serve `app` on 127.0.0.1 (a port the OS picks, bound before the server starts, so no
    other process can take it in between); yields the base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextmanager
def chromium(flags: tuple[str, ...] = CHROMIUM_FLAGS):
    """A selenium WebDriver on headless Chromium (`make browser` installs chromium and
    chromium-driver)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium")
    assert binary, "chromium is not installed: `make test` installs it (make browser)"
    assert Path(CHROMEDRIVER).is_file(), f"{CHROMEDRIVER} is missing: `make browser` installs it"
    options = webdriver.ChromeOptions()
    options.binary_location = binary  # with both paths given, selenium looks nothing up online
    for flag in flags:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()  # ends the session and the chromedriver process it started


def screenshot(driver, name: str) -> Path:
    """Save a PNG of the window under test-artifacts/ and return its path."""
    SCREENSHOTS.mkdir(exist_ok=True)
    path = SCREENSHOTS / name
    assert driver.save_screenshot(str(path)), f"could not write {path}"
    return path
