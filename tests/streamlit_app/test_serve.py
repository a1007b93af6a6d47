"""The dashboard launcher's warm-up (``streamlit_app/serve.py``); that its server answers
only once the store's first snapshot is taken is asserted where the browser tests start
it (``test_browser.py``)."""

from __future__ import annotations

import os
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from finpipe.settings import Settings, load_settings
from streamlit_app import live, push, serve
from streamlit_app.store import shared_store
from tests.streamlit_app.test_browser import start_dashboard, wait_healthy
from tests.streamlit_app.test_store import closed_port
from tests.support.network import free_port


def settings_with(**update: object) -> Settings:
    return load_settings().model_copy(update=update)


@pytest.fixture(autouse=True)
def _stop_feeds() -> Iterator[None]:
    yield
    live.release_feeds()


def test_one_store_per_storage_location_and_window() -> None:
    base = settings_with(lake_prefix="serve-a/lake")
    assert shared_store(base) is shared_store(base.model_copy())
    assert shared_store(base) is not shared_store(base.model_copy(update={"lake_prefix": "b"}))
    window = base.model_copy(update={"dashboard_tail_minutes": base.dashboard_tail_minutes + 1})
    assert shared_store(base) is not shared_store(window)


def test_the_warm_up_runs_the_page_code_on_an_empty_snapshot() -> None:
    serve.warm_up()  # raises if a query or a figure cannot take an empty snapshot


def test_unreachable_storage_leaves_the_warm_up_to_the_page() -> None:
    settings = settings_with(
        s3_endpoint_url=f"http://127.0.0.1:{closed_port()}", lake_prefix="serve-closed/lake"
    )
    # Captured from structlog itself: where its lines are printed depends on whether
    # an earlier test in the session configured logging (stdout, or a stderr handler).
    with capture_logs() as logs:
        assert serve.warm_store(settings) is False  # returns: the page shows what is wrong
    skipped = [entry for entry in logs if entry["event"] == "dashboard.warm_up_skipped"]
    assert len(skipped) == 1 and "127.0.0.1" in skipped[0]["reason"]


def test_the_warm_up_starts_the_process_s_one_live_feed() -> None:
    """Before the first page: the pages of every session then find it (no broker here;
    the feed says so, test_live.py)."""
    settings = settings_with(
        s3_endpoint_url=f"http://127.0.0.1:{closed_port()}", kafka_topic=f"serve-{uuid.uuid4()}"
    )
    serve.warm_store(settings)
    feed = live.shared_feed(settings.model_copy())
    assert feed.running and feed.topic == settings.kafka_topic
    live.release_feeds()
    assert not feed.running


def test_a_launcher_with_unreachable_storage_still_starts_and_says_why(tmp_path: Path) -> None:
    """The server's wait for the store ends when the snapshot fails: the dashboard comes up
    and its page shows what is wrong (``test_app.py``) instead of staying down."""
    port, log = free_port(), tmp_path / "dashboard.log"
    env = dict(os.environ, S3_ENDPOINT_URL=f"http://127.0.0.1:{closed_port()}")
    proc = start_dashboard(port, env, log)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc)
        text = log.read_text(errors="replace")
        assert "dashboard.warm_up_skipped" in text, text
        assert "dashboard.store_warm_pending" not in text, text
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_the_server_stops_at_once_with_a_page_s_push_stream_open(
    infrastructure: Settings, tmp_path: Path
) -> None:
    """``make down`` sends SIGTERM: the server ends the push's streams (``push.STOPPING``)
    instead of waiting for the pages to close them, which uvicorn would do for good."""
    port, log = free_port(), tmp_path / "dashboard.log"
    env = dict(os.environ, KAFKA_TOPIC=f"push-stop-{uuid.uuid4().hex[:8]}")
    proc = start_dashboard(port, env, log)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, proc)
        with urllib.request.urlopen(f"{url}{push.PUSH_PATH}", timeout=30) as stream:
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            assert stream.readline().startswith(b"retry: ")  # the stream is open
            proc.terminate()
            proc.wait(timeout=10)  # it used to wait for the stream's end: for ever
        assert "Waiting for connections to close" not in log.read_text(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
