"""Starts the dashboard: ``streamlit run streamlit_app/dashboard.py`` (the page, ``app.py``,
and the live prices' push, ``push.py``) with the page's libraries
imported first (``finpipe-dashboard [streamlit options]``; ``make up`` and
docker-compose.yml start it this way).

Streamlit runs ``app.py`` only when the first browser session connects, so the first page
of a new process also waited for pandas, DuckDB, pyarrow, plotly and obstore to import
(about 2 s on this project's 2-core machine, ``docs/benchmarks/dashboard.md``). Imported
here, before the server starts, they cost nothing at that first page: the script's imports
find them in ``sys.modules``. The launcher also warms what a first run paid for after the
imports (``docs/benchmarks/dashboard.md``, profiled): the page's queries and figures run
once on an empty snapshot (DuckDB's and Plotly's lazily loaded parts), and the shared
store takes its first snapshot of the lake, so the first page reads only what arrived
since. That snapshot starts first, in a thread, before the plotting libraries import: it
mostly waits on storage and on Arrow's decoding, which release the GIL, so it runs beside
the imports and the warm-up. The server starts once the snapshot has been taken (at most
``WARM_STORE_WAIT_SECONDS``): until then the health endpoint does not answer, so
``make up``, Compose's health check and a browser see a dashboard that is starting instead of a
first page that waits for the lake. The server answers later for it, and from the
process's start the first page comes no sooner (``docs/benchmarks/dashboard.md``): a
dashboard is started far less often than it is opened, and its page budget is what this
serves. A snapshot that fails (storage unreachable, bad settings) ends the wait at once
and the page shows what is wrong. Everything imported is frozen out of the cyclic garbage
collector, which Streamlit runs in full after every script run. Options after the command
go to ``streamlit run``.
"""

from __future__ import annotations

import datetime as dt
import gc
import sys
import threading
import time
from pathlib import Path

import structlog

from finpipe.settings import Settings, load_settings
from streamlit_app import live
from streamlit_app.store import empty_snapshot, shared_store

APP = Path(__file__).with_name("dashboard.py")
# The longest the server's start waits for the store's first snapshot: it is a head start,
# never a reason to stay down (a day's first listing is bounded: lake_tail.py).
WARM_STORE_WAIT_SECONDS = 30.0

log = structlog.get_logger("streamlit_app.serve")


def warm_up() -> None:
    """The page's modules and, through them, its heavy libraries (the script imports them
    again by name and finds them loaded), then the page's code on an empty snapshot: what
    is loaded on first use gets loaded."""
    import pandas as pd

    import streamlit_app.status  # noqa: F401
    from streamlit_app import analytics, charts, tables
    from streamlit_app.windows import WindowChoice, resolve

    now = dt.datetime.now(dt.UTC)
    window = resolve(WindowChoice.TODAY, now)
    snapshot = empty_snapshot(now)
    charts.candlestick(analytics.candles(snapshot, "warm-up", window), "warm-up", window)
    charts.comparison(analytics.normalized_prices(snapshot, ["warm-up"], window), window)
    live.with_live_prices(analytics.price_tiles(snapshot, ["warm-up"]), {})
    live.tape_frame([])
    tables.styled(pd.DataFrame({"price": [1.0]}), {"price": tables.price_text}).to_html()


def warm_store(settings: Settings | None = None) -> bool:
    """The live feed's start and the store's first snapshot, before a browser asks (a page
    that comes while it is taken waits for it and then reads only what is new; the feed is
    the one every session shares). False when settings or storage are wrong: the page
    then shows what is wrong."""
    try:
        settings = settings or load_settings()
        started = time.monotonic()
        live.shared_feed(settings)  # its consumer connects while the store reads
        shared_store(settings).snapshot([])
    except Exception as exc:  # the page shows what is wrong with settings or storage
        log.info("dashboard.warm_up_skipped", reason=f"{type(exc).__name__}: {exc}"[:300])
        return False
    log.info("dashboard.store_warm", seconds=round(time.monotonic() - started, 3))
    return True


def main(argv: list[str] | None = None) -> None:
    """Runs the server until it stops; exits the process with Streamlit's status."""
    store = threading.Thread(target=warm_store, name="dashboard-warm-store", daemon=True)
    store.start()
    from streamlit.web import cli

    try:
        warm_up()
    except Exception as exc:  # only a head start: the page runs the same code and reports
        log.warning("dashboard.warm_up_failed", error=f"{type(exc).__name__}: {exc}"[:300])
    gc.freeze()  # what is loaded now lives as long as the process: no collection looks at it
    store.join(WARM_STORE_WAIT_SECONDS)
    if store.is_alive():  # the first page will wait for the rest of it
        log.warning("dashboard.store_warm_pending", waited_seconds=WARM_STORE_WAIT_SECONDS)
    sys.argv = ["streamlit", "run", str(APP), *(sys.argv[1:] if argv is None else argv)]
    cli.main(prog_name="streamlit")


if __name__ == "__main__":
    main()
