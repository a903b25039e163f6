"""Fixtures for driving the example site in headless Chromium.

- ``memcached``: a real memcached for the whole run (``tests/memcached.py``);
- ``site``: ``examples/app.py`` run as users run it (its own threaded server,
  in a child process, on a free loopback port), against that memcached;
- ``attacker``: a second origin (another loopback port, or another loopback
  address: another *site*) serving a page that auto-submits a form to the
  example;
- ``browser``, ``new_context`` and ``page``: Debian's Chromium through
  Playwright. Never a downloaded browser: a missing Chromium or Playwright
  fails the tests with the command that installs it.

A failing test leaves a screenshot of every page it opened, and the tail of the
example's log, in ``tests/browser/screenshots/``.
"""

from __future__ import annotations

import http.server
import os
import re
import selectors
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from html import escape
from pathlib import Path
from typing import Any

import pytest
from memcached import MemcachedServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
SCREENSHOTS = HERE / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SECRET = "browser-tests-secret-0123456789abcdef"
COOKIE = "demo_session"
#: Generous: the machine may be a loaded 2-core VM.
TIMEOUT_MS = 20_000
INSTALL_HINT = (
    "run `make test-browser` (installs Debian's chromium and the [browser] extra), or "
    "`apt-get install chromium` and `pip install -e '.[browser]'`"
)


# ---------------------------------------------------------------- servers


@pytest.fixture(scope="session")
def memcached() -> Iterator[MemcachedServer]:
    server = MemcachedServer().start()
    try:
        yield server
    finally:
        server.stop()


class ExampleSite:
    """``examples/app.py`` in a child process; stopped by its PID."""

    def __init__(self, memcached: MemcachedServer, log_path: Path, **environ: str) -> None:
        self.log_path = log_path
        env = dict(os.environ)
        env.update(
            HOST="127.0.0.1",
            PORT="0",  # the app prints the port it got
            MEMCACHE_SERVERS=memcached.address,
            SESSION_SECRET=SECRET,
            PYTHONUNBUFFERED="1",
            **environ,
        )
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(ROOT / "examples" / "app.py")],
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        self.url = self._wait_for_address(deadline=time.monotonic() + 30)
        self._wait_healthy(deadline=time.monotonic() + 30)

    def _wait_for_address(self, deadline: float) -> str:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if selector.select(timeout=0.5):
                    line = self.proc.stdout.readline().decode()
                    match = re.search(r"Serving on (http://\S+?)/? ", line)
                    if match:
                        return match.group(1)
                    if not line and self.proc.poll() is not None:
                        break
        self.stop()
        raise RuntimeError(f"examples/app.py did not start:\n{self.log_tail()}")

    def _wait_healthy(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"examples/app.py is not healthy:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


@pytest.fixture(scope="session")
def example(memcached: MemcachedServer, tmp_path_factory: Any) -> Iterator[ExampleSite]:
    site = ExampleSite(memcached, tmp_path_factory.mktemp("example") / "app.log")
    try:
        yield site
    finally:
        site.stop()


@pytest.fixture
def site(example: ExampleSite) -> str:
    """The example's base URL, ``http://127.0.0.1:<port>``."""
    return example.url


@pytest.fixture(scope="session")
def rotating_site(memcached: MemcachedServer, tmp_path_factory: Any) -> Iterator[str]:
    """A second example site whose ids are replaced after 2 s (grace 1 s)."""
    log = tmp_path_factory.mktemp("rotating") / "app.log"
    site = ExampleSite(memcached, log, ROTATE_AFTER="2", ROTATE_GRACE="1")
    try:
        yield site.url
    finally:
        site.stop()


class _AttackPage(http.server.BaseHTTPRequestHandler):
    """``/?target=<url>&<field>=<value>...``: a page that POSTs those fields to ``target``."""

    def do_GET(self) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        target = query.pop("target", [""])[0]
        fields = "".join(
            f'<input type="hidden" name="{escape(k)}" value="{escape(v[0])}">'
            for k, v in query.items()
        )
        body = (
            "<!doctype html><title>You won a prize</title><h1>Claim your prize</h1>"
            f'<form id="f" method="post" action="{escape(target)}">{fields}</form>'
            "<script>document.getElementById('f').submit()</script>"
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def attacker() -> Iterator[Callable[[str], str]]:
    """``attacker(host)``: the base URL of the attack page served on ``host``, a free port."""
    servers: dict[str, http.server.ThreadingHTTPServer] = {}

    def start(host: str) -> str:
        if host not in servers:
            server = http.server.ThreadingHTTPServer((host, 0), _AttackPage)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers[host] = server
        return f"http://{host}:{servers[host].server_port}"

    try:
        yield start
    finally:
        for server in servers.values():
            server.shutdown()
            server.server_close()


# ---------------------------------------------------------------- the browser


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"Chromium not found at {CHROMIUM}: {INSTALL_HINT}", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"Playwright for Python is not installed: {INSTALL_HINT}", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True, timeout=60_000
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"_report_{report.when}", report)


def _failed(node: pytest.Item) -> bool:
    return any(
        getattr(getattr(node, f"_report_{when}", None), "failed", False)
        for when in ("setup", "call")
    )


@pytest.fixture
def new_context(
    browser: Any, request: pytest.FixtureRequest, example: ExampleSite
) -> Iterator[Callable[[], Any]]:
    """``new_context()``: a fresh browser profile (its own cookies), closed after the test."""
    contexts: list[Any] = []

    def make() -> Any:
        context = browser.new_context(viewport={"width": 1200, "height": 860})
        context.set_default_timeout(TIMEOUT_MS)
        context.set_default_navigation_timeout(TIMEOUT_MS)
        contexts.append(context)
        return context

    yield make
    if _failed(request.node):
        SCREENSHOTS.mkdir(exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", request.node.name)
        for c, context in enumerate(contexts):
            for p, page in enumerate(context.pages):
                try:
                    page.screenshot(path=str(SCREENSHOTS / f"{name}-{c}-{p}.png"), full_page=True)
                except Exception as exc:  # a crashed page must not hide the test's failure
                    print(f"screenshot of context {c} page {p} failed: {exc}")
        (SCREENSHOTS / f"{name}-app.log").write_text(example.log_tail(200))
    for context in contexts:
        context.close()


@pytest.fixture
def page(new_context: Callable[[], Any]) -> Any:
    """A tab in a fresh browser profile."""
    return new_context().new_page()
