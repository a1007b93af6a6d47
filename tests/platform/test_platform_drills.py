"""Whole-platform drills over the real stack, started by the same code as `make up`.

One ordered pass (the tests share one running platform and run in file order):
start → trades reach the lake and the summaries → Prometheus scrapes every endpoint and
every Grafana panel has data → late trades of a closed day reach that
day's summaries → the Dagster UI shows lineage and freshness → the dashboard → kill the
producer → change the tickers and Terminate the producer's run from the UI → kill Spark →
stop the feed until the stale alert (Dagster's and Prometheus's rule), reconcile the lake
with Kafka exactly, resume and recover (both) → `make down` / `make up` keeps history →
`make down` leaves no process behind.
The broker outage has its own replay-driven platform: test_outage_drill.py.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import requests
from confluent_kafka import Producer

from finpipe import health, lake, summaries
from finpipe.contracts import TradeRecord
from finpipe.settings import Settings
from finpipe_dagster.streams.policy import SUPERVISOR
from finpipe_dagster.streams.sensors import DECISION_TAG, LAUNCHED_BY_TAG
from infra import monitoring
from infra import stack as infra_stack
from infra.processes import pid_alive
from producer.simulator.market import DEMO_50_TICKERS
from tests.support.kafka import kafka_end_offsets
from tests.support.network import listening_addresses
from tests.support.platform import (
    ALERTS_TICK_SECONDS,
    DRILL_CADENCES,
    beat,
    lake_coordinates,
    running_platform,
    stream_pids,
)
from tests.support.prometheus import api, dashboard_expressions, firing, has_data, query
from tests.support.waiting import wait_for
from tests.support.webhook import Webhook

pytestmark = [pytest.mark.e2e, pytest.mark.drill]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ADDED_TICKER = "COINBASE:BTC-USD"  # crypto trades around the clock; ':' and '-' round-trip
# FINPIPE_DRILL_SYMBOLS=50: the pass at Finnhub's per-connection limit (49 of the
# simulator's 50 spellings, then ADDED_TICKER makes 50).
DRILL_TICKERS = (
    tuple(t for t in DEMO_50_TICKERS if t != ADDED_TICKER)[:49]
    if os.environ.get("FINPIPE_DRILL_SYMBOLS") == "50"
    else ("BINANCE:BTCUSDT", "BINANCE:ETHUSDT", "AAPL", "BRK.B")
)


@pytest.fixture(scope="module")
def alerts() -> Iterator[Webhook]:
    receiver = Webhook()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def stack(
    infrastructure: Settings, alerts: Webhook, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """The platform, up, with this run's own names (``support.platform.running_platform``)."""
    work = tmp_path_factory.mktemp("platform")
    # The tickers live in an env file, as a user's `.env` does, so a drill can change them.
    env_file = work / "finpipe.env"
    env_file.write_text(f"FINNHUB_TICKERS={','.join(DRILL_TICKERS)}\n")
    env = {
        "FINPIPE_ENV_FILE": str(env_file),
        **DRILL_CADENCES,
        "FRESHNESS_WARN_SECONDS": "30",
        "FRESHNESS_FAIL_SECONDS": "45",
        "ALERT_WEBHOOK_URL": alerts.url,
        # A real Prometheus scrapes every endpoint and evaluates monitoring/alert-rules.yml.
        "PROMETHEUS_ENABLED": "true",
        "PROMETHEUS_SCRAPE_SECONDS": "2",
    }
    # FINNHUB_TICKERS in the environment would win over the file.
    with running_platform(infrastructure, work, env, unset=("FINNHUB_TICKERS",)) as settings:
        yield settings


@pytest.fixture(autouse=True)
def running_streams(stack: Settings) -> None:
    """Each drill starts on a running platform, whatever the drill before it left behind:
    the feed on and both streams beating. A drill that failed half-way (the simulator
    still stopped, a stream still restarting) so fails alone instead of every later one."""
    simulator = infra_stack.simulator_process(stack)
    if simulator.pid() is None:
        simulator.start()
    wait_for("both streams", lambda: beat(stack, "producer") and beat(stack, "spark"), 480)


def test_up_starts_every_component(stack: Settings) -> None:
    rows = {row["name"]: row for row in infra_stack.status_rows(stack)}
    for name in ("kafka", "minio", "simulator", "dagster-webserver", "dagster-daemon", "streamlit",
                 "control-metrics", "prometheus"):  # fmt: skip
        assert rows[name]["state"] == "running", rows[name]
    infra_stack.up(stack)  # a second `make up` is harmless: same processes
    again = {row["name"]: row["pid"] for row in infra_stack.status_rows(stack)}
    assert all(again[name] == rows[name]["pid"] for name in again if name in rows)


def test_trades_reach_the_lake_and_the_summaries(stack: Settings) -> None:
    wait_for("producer deliveries", lambda: (b := beat(stack, "producer")) and b["delivered"], 300)
    wait_for(
        "a committed Spark batch", lambda: (b := beat(stack, "spark")) and b.get("total_rows"), 480
    )
    rows, distinct, _ = lake_coordinates(stack)
    assert rows > 0 and rows == distinct
    symbols = {r[0] for r in lake.duckdb_with_lake(stack).execute(
        "SELECT DISTINCT symbol FROM processed_trades").fetchall()}  # fmt: skip
    assert symbols <= set(stack.finnhub_tickers) and symbols

    def bars() -> int:
        return summaries.read(stack, summaries.OHLCV_1M).num_rows

    assert wait_for("today's 1-minute bars from Dagster", bars, 480, every=5) > 0


def test_prometheus_scrapes_every_endpoint_and_every_panel_has_data(stack: Settings) -> None:
    """Every endpoint listens on loopback only and `make status` lists it; the platform's
    own Prometheus scrapes them all, and each expression of the Grafana dashboard
    returns data from it."""
    prometheus = monitoring.prometheus_url(stack)
    endpoints = monitoring.metrics_endpoints(stack)
    assert set(endpoints) == {"finpipe_producer", "finpipe_spark", "finpipe_control"}
    listed = {row["url"] for row in infra_stack.status_rows(stack)}
    for url in endpoints.values():
        assert url in listed, url
        port = int(url.split(":")[2].split("/")[0])
        assert listening_addresses(port) == {"127.0.0.1"}, url

    def scraped() -> dict[str, str] | None:
        targets = api(prometheus, "targets")["activeTargets"]
        health_by_job = {t["labels"]["job"]: t["health"] for t in targets}
        return health_by_job if set(health_by_job.values()) == {"up"} else None

    assert set(wait_for("every target up", scraped, 120)) == set(endpoints)
    missing: list[tuple[str, str]] = []

    def every_panel() -> bool:
        missing[:] = [
            (t, e) for t, e in dashboard_expressions() if not has_data(query(prometheus, e))
        ]
        return not missing

    assert wait_for_quietly(every_panel, 240), f"panels without data: {missing}"


def wait_for_quietly(probe: Any, timeout: float) -> bool:
    """True once ``probe`` is; False after ``timeout`` (the caller says what was missing)."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            return False
        time.sleep(3)
    return True


def test_late_trades_of_a_closed_day_are_summarized(stack: Settings) -> None:
    """Trades of a past day (as a replayed session sends them) reach that day's
    partition of the lake, and the late-data sensor rebuilds that day's summaries."""
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)
    noon_ms = int(dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC).timestamp() * 1000)
    now_ms = int(time.time() * 1000)
    symbol = DRILL_TICKERS[0]
    trades = [
        TradeRecord(symbol, 100.0 + i, 1.0, noon_ms + i * 1000, None, now_ms, "replay")
        for i in range(5)
    ]
    producer = Producer({"bootstrap.servers": stack.kafka_server, "enable.idempotence": True})
    for trade in trades:
        producer.produce(stack.kafka_topic, msgspec.json.encode(trade), key=symbol)
    assert producer.flush(30) == 0

    def day_stats() -> dict[str, Any] | None:
        rows = summaries.read(stack, summaries.DAILY_SYMBOL_STATS, [day]).to_pylist()
        return next((r for r in rows if r["symbol"] == symbol), None)

    stats = wait_for(f"the summaries of {day}", day_stats, 420, every=5)
    assert (stats["trade_count"], stats["open"], stats["close"]) == (5, 100.0, 104.0), stats
    assert stats["volume"] == 5.0


def test_dagster_shows_lineage_and_freshness(stack: Settings) -> None:
    query = """{ assetNodes { assetKey { path } dependencyKeys { path }
                 freshnessPolicy: internalFreshnessPolicy { __typename } } }"""
    url = f"http://127.0.0.1:{stack.dagster_port}/graphql"

    def nodes() -> dict[str, Any] | None:
        response = requests.post(url, json={"query": query}, timeout=30).json()
        found = (response.get("data") or {}).get("assetNodes") or []
        return {"/".join(n["assetKey"]["path"]): n for n in found} or None

    graph = wait_for("the code location", nodes, 120)
    deps = {
        key: {"/".join(d["path"]) for d in node["dependencyKeys"]} for key, node in graph.items()
    }
    assert deps["processed_trades"] == {"stock_ticks"}
    for summary in ("ohlcv_1m", "daily_symbol_stats", "latest_prices"):
        assert "processed_trades" in deps[summary]
    assert graph["processed_trades"]["freshnessPolicy"] is not None
    page = "assets/processed_trades?view=lineage&lineageScope=neighbors"
    text = screenshot(f"http://127.0.0.1:{stack.dagster_port}/{page}", "dagster-lineage.png",
                      wait_text="ohlcv_1m")  # fmt: skip
    for key in ("stock_ticks", "processed_trades", "daily_symbol_stats", "latest_prices"):
        assert key in text


def test_dashboard_shows_the_produced_symbols(stack: Settings) -> None:
    symbols = {r[0] for r in lake.duckdb_with_lake(stack).execute(
        "SELECT DISTINCT symbol FROM processed_trades").fetchall()}  # fmt: skip
    text = screenshot(f"http://127.0.0.1:{stack.streamlit_port}", "dashboard-live.png",
                      wait_text="1-minute candles", wait_selector=".js-plotly-plot")  # fmt: skip
    for symbol in symbols:
        assert symbol in text, f"{symbol} is not on the page"
    assert "%3A" not in text


def screenshot(url: str, name: str, *, wait_text: str, wait_selector: str | None = None) -> str:
    """Load a page in headless Chromium, save a screenshot, return the page's text."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=infra_stack.ensure_chromium(),
            args=list(infra_stack.CHROMIUM_ARGS),
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url, timeout=60_000)
            page.get_by_text(wait_text).first.wait_for(timeout=120_000)
            if wait_selector:
                page.locator(wait_selector).first.wait_for(timeout=120_000)
            page.wait_for_timeout(3000)
            skip = page.get_by_role("button", name="Skip")  # Dagster's first-visit dialog
            if skip.count():
                skip.first.click()
                page.wait_for_timeout(1000)
            page.screenshot(path=str(ARTIFACTS / name), full_page=True)
            return page.inner_text("body")
        finally:
            browser.close()


def _kill_and_wait_for_replacement(stack: Settings, stream: str, timeout: float) -> float:
    before = beat(stack, stream)
    assert before is not None, f"no live {stream}"
    os.kill(int(before["pid"]), signal.SIGKILL)
    killed_at = time.monotonic()
    most_at_once = 0

    def replaced() -> dict[str, Any] | None:
        nonlocal most_at_once
        most_at_once = max(most_at_once, len(stream_pids(stream)))
        new = beat(stack, stream)
        return new if new and new["pid"] != before["pid"] else None

    wait_for(f"a new {stream} process", replaced, timeout, every=1)
    assert most_at_once <= 1, f"{most_at_once} {stream} processes ran at once"
    return time.monotonic() - killed_at


def test_killed_producer_is_restarted_by_its_supervisor(stack: Settings) -> None:
    killed_run = beat(stack, "producer")[health.RUN_ID_KEY]
    took = _kill_and_wait_for_replacement(stack, "producer", 240)
    print(f"producer replaced {took:.0f}s after SIGKILL")
    # The killed process's run is a failed run, and one run of the stream is live.
    assert wait_for("the killed run to end", lambda: ended_status(stack, killed_run), 120) == (
        "FAILURE"
    )
    assert live_stream_run(stack, "producer") not in {None, killed_run}
    # The supervisor saw the failed run and restarted at once (one failure, first backoff),
    # not after a stale heartbeat; how long the new process takes to start is the machine's.
    run_id = beat(stack, "producer")[health.RUN_ID_KEY]
    query = "query($id: ID!) { runOrError(runId: $id) { ... on Run { tags { key value } } } }"
    tags = {t["key"]: t["value"] for t in graphql(stack, query, id=run_id)["runOrError"]["tags"]}
    assert tags[LAUNCHED_BY_TAG] == SUPERVISOR, tags
    assert tags[DECISION_TAG].startswith("restarting after 1 failure(s)"), tags
    assert len(stream_pids("producer")) == 1


def graphql(settings: Settings, query: str, **variables: Any) -> dict[str, Any]:
    url = f"http://127.0.0.1:{settings.dagster_port}/graphql"
    response = requests.post(url, json={"query": query, "variables": variables}, timeout=30)
    body = response.json()
    assert not body.get("errors"), body
    return body["data"]


def live_stream_run(settings: Settings, stream: str) -> str | None:
    query = """query($filter: RunsFilter) { runsOrError(filter: $filter) {
                 ... on Runs { results { runId } } } }"""
    tags = [{"key": "finpipe/stream", "value": stream}]
    data = graphql(settings, query, filter={"tags": tags, "statuses": ["STARTED"]})
    runs = data["runsOrError"]["results"]
    assert len(runs) <= 1, runs
    return runs[0]["runId"] if runs else None


def run_status(settings: Settings, run_id: str) -> str:
    query = "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"
    return graphql(settings, query, id=run_id)["runOrError"]["status"]


def ended_status(settings: Settings, run_id: str) -> str | None:
    status = run_status(settings, run_id)
    return status if status in {"CANCELED", "SUCCESS", "FAILURE"} else None


def test_changed_tickers_take_effect_after_terminate_in_the_ui(stack: Settings) -> None:
    """README's recipe: edit FINNHUB_TICKERS in the env file, Terminate the producer's run
    (the UI's GraphQL mutation); the process stops cleanly with nothing lost, the
    supervisor's next run subscribes the new list, and nothing else is restarted."""
    producer, spark = beat(stack, "producer"), beat(stack, "spark")
    assert producer is not None and spark is not None
    assert ADDED_TICKER not in producer["subscribed"]
    run_id = wait_for("the producer's run", lambda: live_stream_run(stack, "producer"), 60)
    env_file = Path(os.environ["FINPIPE_ENV_FILE"])
    env_file.write_text(f"FINNHUB_TICKERS={','.join([*DRILL_TICKERS, ADDED_TICKER])}\n")

    mutation = """mutation($id: String!) { terminateRun(runId: $id) {
                    __typename ... on TerminateRunFailure { message }
                    ... on PythonError { message } } }"""
    result = graphql(stack, mutation, id=run_id)["terminateRun"]
    assert result["__typename"] == "TerminateRunSuccess", result

    def final_report() -> dict[str, Any] | None:
        found = health.read_health(stack, "producer")
        return found if found and found["pid"] == producer["pid"] and found.get("final") else None

    final = wait_for("the producer's final report", final_report, 60, every=0.2)
    # Nothing is lost at a stop: what Kafka has not confirmed yet stays in the receive log
    # and is delivered by the next start.
    assert final["frames_not_logged"] == 0, final
    assert final["received"] == final["delivered"] + final["dead_lettered"] + final["in_flight"], (
        final
    )

    assert wait_for("the run to end", lambda: ended_status(stack, run_id), 60) == "CANCELED"
    assert not pid_alive(int(producer["pid"]))

    def restarted() -> dict[str, Any] | None:
        new = beat(stack, "producer")
        return new if new and new["pid"] != producer["pid"] else None

    new = wait_for("the supervisor's new producer", restarted, 240, every=1)
    assert new["subscribed"] == [*DRILL_TICKERS, ADDED_TICKER]

    def added_symbol_rows() -> int:
        con = lake.duckdb_with_lake(stack)
        query = "SELECT count(*) FROM processed_trades WHERE symbol = ?"
        return con.execute(query, [ADDED_TICKER]).fetchone()[0]

    assert wait_for(f"{ADDED_TICKER} in the lake", added_symbol_rows, 300, every=5) > 0
    assert beat(stack, "spark")["pid"] == spark["pid"], "Spark was restarted too"
    assert len(stream_pids("producer")) == 1


def test_killed_spark_is_restarted_by_its_supervisor(stack: Settings) -> None:
    took = _kill_and_wait_for_replacement(stack, "spark", 300)
    print(f"spark replaced {took:.0f}s after SIGKILL")
    wait_for(
        "a batch after the restart",
        lambda: (b := beat(stack, "spark")) and b.get("event") == "batch",
        300,
    )
    assert len(stream_pids("spark")) == 1


def test_a_stopped_feed_alerts_once_reconciles_and_recovers_once(
    stack: Settings, alerts: Webhook
) -> None:
    # Earlier drills may have opened and closed incidents of their own: count from here.
    wait_for("no open stale incident", lambda: len(alerts.stale_alerts()) == len(
        alerts.stale_recoveries()), 300, every=5)  # fmt: skip
    since = len(alerts.accepted)
    simulator = infra_stack.simulator_process(stack)
    simulator.stop()
    stale = wait_for("the stale-lake alert", lambda: alerts.stale_alerts(since), 300, every=5)
    assert len(stale) == 1, alerts.texts(since)
    # Prometheus's rule, on the control plane's metrics, says the same.
    prometheus = monitoring.prometheus_url(stack)
    fired = wait_for("FinpipeLakeStale firing in Prometheus",
                     lambda: firing(prometheus, "FinpipeLakeStale"), 120, every=2)  # fmt: skip
    assert fired[0]["labels"]["job"] == "finpipe_control"

    # The feed is quiet: once Spark has caught up, the lake equals Kafka exactly:
    # per partition as many rows as records, and no (partition, offset) twice.
    def caught_up() -> tuple[int, int] | None:
        ends = {p: n for p, n in kafka_end_offsets(stack).items() if n}
        rows, distinct, per_partition = lake_coordinates(stack)
        return (rows, distinct) if per_partition == ends else None

    rows, distinct = wait_for("Spark to catch up with Kafka", caught_up, 300, every=5)
    assert rows == distinct == sum(kafka_end_offsets(stack).values())
    print(f"reconciled: {rows} trades in Kafka and in the lake, 0 lost, 0 duplicated")

    simulator.start()
    wait_for("the recovery alert", lambda: alerts.stale_recoveries(since), 420, every=5)
    wait_for("FinpipeLakeStale resolved in Prometheus",
             lambda: not firing(prometheus, "FinpipeLakeStale"), 120, every=2)  # fmt: skip
    time.sleep(2 * ALERTS_TICK_SECONDS + 2)  # two more alerts ticks: nothing new may arrive
    assert len(alerts.stale_alerts(since)) == 1, alerts.texts(since)
    assert len(alerts.stale_recoveries(since)) == 1, alerts.texts(since)


def test_down_then_up_resumes_with_history(stack: Settings) -> None:
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        runs_before = instance.get_runs_count()
    rows_before, _, _ = lake_coordinates(stack)
    pids = [int(row["pid"]) for row in infra_stack.status_rows(stack) if row["pid"].isdigit()]
    infra_stack.down(stack)
    assert not [pid for pid in pids if pid_alive(pid)]
    assert not stream_pids("producer") and not stream_pids("spark")

    infra_stack.up(stack)
    with DagsterInstance.get() as instance:
        assert instance.get_runs_count() >= runs_before
    wait_for(
        "the lake to grow after restart",
        lambda: lake_coordinates(stack)[0] > rows_before,
        480,
        every=5,
    )
    rows, distinct, _ = lake_coordinates(stack)
    assert rows == distinct
