"""The dashboard launcher's warm-up (``streamlit_app/serve.py``), without a server."""

from __future__ import annotations

import socket

from structlog.testing import capture_logs

from finpipe.settings import Settings, load_settings
from streamlit_app import serve
from streamlit_app.store import shared_store


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def settings_with(**update: object) -> Settings:
    return load_settings().model_copy(update=update)


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
