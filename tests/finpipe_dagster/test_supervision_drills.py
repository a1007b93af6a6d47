"""Supervision drills: real stream processes, a real Dagster instance, real faults.

The supervisor and alert sensors are ticked by the test (as the daemon would, with the
state Dagster stores for them), and each run the supervisor requests is executed for real
(``execute_in_process`` in a thread: the op starts the stream's console script under
Pipes). Timings are shortened through the supervision settings; the rules are the same
at the defaults (see docs/operations.md).

* a hung producer (SIGSTOP) with a stale heartbeat is never doubled, and is replaced
  exactly once after it is confirmed dead;
* a producer with a wrong token stops the retries at once, the alert names the setting,
  and the documented resume (sensor off and on, through Dagster's CLI) restarts it;
* the object store stopped for longer than the whole backoff schedule: the Spark stream's
  supervisor never gives up, one "keeps failing" alert and one recovery arrive.

Each drill also fails if a run is still executing a minute after its stream process was
stopped (it takes seconds), which needs SIGTERM to end what the tests start, Dagster's own
compute-log mirrors of each run included.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    RunRequest,
    RunsFilter,
    SkipReason,
    build_sensor_context,
)
from dagster._core.definitions.run_request import InstigatorType
from dagster._core.instance.ref import InstanceRef

from finpipe import exit_codes
from finpipe.settings import Settings, load_settings
from finpipe_dagster.alerts.sensors import build_alerts_sensor
from finpipe_dagster.definitions import build_resources
from finpipe_dagster.instance import STREAM_TAG
from finpipe_dagster.resources import FinpipeSettings
from finpipe_dagster.streams import processes
from finpipe_dagster.streams.jobs import STREAM_JOBS
from finpipe_dagster.streams.resources import PipesStreamClient, SupervisionPolicy
from finpipe_dagster.streams.sensors import build_supervisor_sensors
from producer.simulator.server import SimulatorConfig, SimulatorServer
from tests.support.waiting import wait_for
from tests.support.webhook import Webhook

ROOT = Path(__file__).resolve().parents[2]
SUPERVISORS = build_supervisor_sensors(load_settings())
alerts_sensor = build_alerts_sensor(load_settings())

pytestmark = pytest.mark.e2e


class Platform:
    """A Dagster instance on disk, one stream's supervisor, the alert sensor and the runs."""

    def __init__(self, tmp_path: Path, stream: str, **policy: float) -> None:
        self.stream = stream
        self.dagster_home = tmp_path / "dagster"
        self.dagster_home.mkdir()
        self.instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(self.dagster_home)))
        self.finpipe = FinpipeSettings(
            finpipe_home=str(tmp_path / "finpipe"),
            kafka_topic=f"drill-{uuid.uuid4().hex[:8]}",
            lake_prefix=f"drill-{uuid.uuid4().hex[:8]}/processed_trades",
            # the lake stays empty in these drills: only the stream incidents may open
            freshness_warn_seconds=86_000,
            freshness_fail_seconds=86_400,
        )
        self.supervision = SupervisionPolicy(**policy)
        self.cursor: str | None = None
        self.threads: list[threading.Thread] = []
        self.decisions: list[str] = []

    # --- sensors -----------------------------------------------------------------------

    def stored_sensor_state(self) -> tuple[float | None, str | None]:
        """(last start time, cursor) as Dagster stores them for the supervisor sensor."""
        name = f"{self.stream}_supervisor"
        for state in self.instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
            if state.name == name and state.instigator_data is not None:
                data = state.instigator_data
                return data.last_sensor_start_timestamp, data.cursor  # type: ignore[union-attr]
        return None, None

    def tick(self) -> RunRequest | SkipReason:
        started_at, _ = self.stored_sensor_state()
        resources = {"finpipe": self.finpipe, "supervision": self.supervision}
        with build_sensor_context(
            instance=self.instance,
            cursor=self.cursor,
            resources=resources,
            last_sensor_start_time=started_at,
        ) as context:
            result = SUPERVISORS[self.stream](context)
            self.cursor = context.cursor
        self.decisions.append(json.loads(self.cursor or "{}").get("action", "?"))
        return result  # type: ignore[return-value]

    def healthy(self) -> bool:
        self.tick()
        return json.loads(self.cursor or "{}").get("healthy") is True

    def alert_tick(self) -> str:
        resources = build_resources(self.finpipe)
        resources["supervision"] = self.supervision
        with build_sensor_context(instance=self.instance, resources=resources) as context:
            return alerts_sensor(context).skip_message  # type: ignore[union-attr]

    # --- runs ----------------------------------------------------------------------------

    def launch(self, request: RunRequest) -> str:
        """Execute the requested run for real, in a thread; returns its run id."""
        before = {r.run_id for r in self.runs()}
        resources = {
            "finpipe": self.finpipe,
            "pipes_stream": PipesStreamClient(termination_timeout_seconds=15),
        }

        def run() -> None:
            STREAM_JOBS[self.stream].execute_in_process(
                instance=self.instance, resources=resources, tags=request.tags, raise_on_error=False
            )

        thread = threading.Thread(target=run, name=f"run-{self.stream}", daemon=True)
        thread.start()
        self.threads.append(thread)
        new = wait_for("the run", lambda: {r.run_id for r in self.runs()} - before, 60)
        run_id: str = next(iter(new))  # type: ignore[call-overload]
        thread.name = f"run {run_id}"
        return run_id

    def runs(self) -> list:  # type: ignore[type-arg]
        return list(self.instance.get_runs(RunsFilter(tags={STREAM_TAG: self.stream})))

    def run(self, run_id: str):  # type: ignore[no-untyped-def]
        return self.instance.get_run_by_id(run_id)

    def process_of(self, run_id: str) -> str:
        return wait_for(  # type: ignore[return-value]
            "the stream process",
            lambda: self.run(run_id).tags.get(processes.PROCESS_TAG),
            60,
        )

    def live_processes(self) -> list[str]:
        found = []
        for run in self.runs():
            identity = run.tags.get(processes.PROCESS_TAG)
            if identity and processes.probe(identity) == "alive":
                found.append(identity)
        return found

    def heartbeat_run(self) -> str | None:
        path = Path(self.finpipe.finpipe_home or "") / "state" / f"{self.stream}_health.json"
        try:
            return json.loads(path.read_text()).get("run_id")
        except (OSError, ValueError):
            return None

    def stop_all(self) -> None:
        for identity in self.live_processes():
            processes.send_signal(identity, signal.SIGCONT)
            processes.send_signal(identity, signal.SIGTERM)
        # A run ends within seconds of its stream process: one still executing after a
        # minute is stuck behind it (as runs were, a minute each, while the tests'
        # SIGTERM was ignored: see tests/conftest.py), which the drill reports.
        for thread in self.threads:
            thread.join(60)
        stuck = [thread.name for thread in self.threads if thread.is_alive()]
        for identity in self.live_processes():
            processes.send_signal(identity, signal.SIGKILL)
        assert not stuck, f"still executing 60 s after their stream processes were stopped: {stuck}"


@pytest.fixture
def simulator(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimulatorServer]:
    server = SimulatorServer(SimulatorConfig(port=0, seed=7, token="right-token"))
    server.start_in_thread()
    monkeypatch.setenv("FINNHUB_WS_URL", f"ws://127.0.0.1:{server.port}")
    monkeypatch.setenv("FINNHUB_API_TOKEN", "right-token")
    yield server
    server.stop()


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Webhook]:
    hook = Webhook()
    monkeypatch.setenv("ALERT_WEBHOOK_URL", hook.url)
    monkeypatch.setenv("ALERT_RETRY_MAX_SECONDS", "1")
    yield hook
    hook.close()


@pytest.fixture
def platform_factory(tmp_path: Path) -> Iterator[Callable[..., Platform]]:
    made: list[Platform] = []

    def make(stream: str, **policy: float) -> Platform:
        made.append(Platform(tmp_path, stream, **policy))
        return made[-1]

    yield make
    for platform in made:
        platform.stop_all()


def test_what_the_drills_start_after_a_supervisor_tick_still_stops_on_sigterm(
    platform_factory: Callable[..., Platform],
) -> None:
    """A tick passes Dagster's interrupt boundary on the main thread, which copies SIGINT's
    disposition onto SIGTERM; every process started afterwards inherits SIGTERM's (Dagster's
    compute-log mirrors of each run among them, which SIGTERM must end)."""
    p = platform_factory("producer")
    assert isinstance(p.tick(), RunRequest)  # evaluated, nothing launched
    child = subprocess.Popen(["sleep", "60"])
    child.terminate()
    try:
        assert child.wait(timeout=10) == -signal.SIGTERM
    except subprocess.TimeoutExpired:
        pytest.fail("SIGTERM did not end a child: it inherited an ignored SIGTERM")
    finally:
        child.kill()
        child.wait()


def ensure_drill_topics(settings: Settings, timeout: float = 30) -> None:
    """Create the drill's topics and wait until every partition has a leader."""
    from confluent_kafka.admin import AdminClient

    from producer import topics

    topics.ensure_topics(settings)
    admin = AdminClient({"bootstrap.servers": settings.kafka_server})

    def led() -> bool:
        found = admin.list_topics(settings.kafka_topic, timeout=5).topics.get(settings.kafka_topic)
        return bool(
            found is not None
            and found.error is None
            and found.partitions
            and all(p.leader >= 0 for p in found.partitions.values())
        )

    wait_for(f"leaders for {settings.kafka_topic}", led, timeout)


def test_a_hung_producer_is_never_doubled_and_is_replaced_once_it_is_dead(
    infrastructure: Settings, simulator: SimulatorServer, platform_factory: Callable[..., Platform]
) -> None:
    p = platform_factory(
        "producer", stale_heartbeat_seconds=8, startup_grace_seconds=60, kill_grace_seconds=6,
        base_backoff_seconds=0, stable_run_seconds=3,
    )  # fmt: skip
    first = p.launch(p.tick())  # type: ignore[arg-type]
    wait_for("the first heartbeat of the run", lambda: p.heartbeat_run() == first, 90)
    assert isinstance(p.tick(), SkipReason)
    hung = p.process_of(first)
    assert processes.send_signal(hung, signal.SIGSTOP) == "SIGSTOP sent"  # hung, not dead

    time.sleep(9)  # its heartbeat goes stale
    result = p.tick()
    assert isinstance(result, SkipReason) and "waiting for old process" in result.skip_message
    assert processes.probe(hung) == "alive"  # SIGTERM waits while a process is stopped
    deadline = time.monotonic() + 60
    while processes.probe(hung) == "alive":  # until the grace has passed and SIGKILL went
        assert time.monotonic() < deadline, p.cursor
        result = p.tick()
        assert isinstance(result, SkipReason), "a second copy while the first exists"
        assert len(p.runs()) == 1
        time.sleep(1)
    assert "SIGKILL sent" in json.dumps(json.loads(p.cursor or "{}")["terminated"])

    requests = []
    deadline = time.monotonic() + 60
    while not requests and time.monotonic() < deadline:
        result = p.tick()
        if isinstance(result, RunRequest):
            requests.append(result)
        time.sleep(0.5)
    assert len(requests) == 1, p.decisions
    assert p.run(first).status in {DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    second = p.launch(requests[0])
    wait_for("the replacement's heartbeat", lambda: p.heartbeat_run() == second, 90)
    for _ in range(3):
        assert isinstance(p.tick(), SkipReason)
    assert len(p.runs()) == 2
    assert p.live_processes() == [p.process_of(second)]


def test_a_wrong_token_stops_the_retries_and_the_documented_resume_restarts(
    infrastructure: Settings,
    simulator: SimulatorServer,
    webhook: Webhook,
    platform_factory: Callable[..., Platform],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = platform_factory("producer", base_backoff_seconds=0, stable_run_seconds=3)
    monkeypatch.setenv("FINNHUB_API_TOKEN", "wrong-token")
    failed = p.launch(p.tick())  # type: ignore[arg-type]
    wait_for("the run to fail", lambda: p.run(failed).is_finished, 90)
    assert p.run(failed).tags[processes.EXITED_TAG] == str(exit_codes.NO_RETRY)
    for _ in range(3):  # no backoff at all, still no retry
        result = p.tick()
        assert isinstance(result, SkipReason) and result.skip_message.startswith("stopped:")
    assert "FINNHUB_API_TOKEN" in result.skip_message
    assert "opened stream:producer" in p.alert_tick()
    p.alert_tick()
    [alert] = [r["text"] for r in webhook.accepted]
    assert "producer stopped" in alert and "FINNHUB_API_TOKEN" in alert
    assert "wrong-token" not in alert

    monkeypatch.setenv("FINNHUB_API_TOKEN", "right-token")  # the fix, then the resume:
    for command in ("stop", "start"):
        done = subprocess.run(
            [str(Path(sys.executable).parent / "dagster"), "sensor", command,
             "producer_supervisor", "-w", "workspace.yaml"],
            cwd=ROOT, env={**os.environ, "DAGSTER_HOME": str(p.dagster_home)},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
    started_at, _ = p.stored_sensor_state()
    record = p.instance.get_run_record_by_id(failed)
    assert started_at is not None and record is not None and started_at > record.end_time  # type: ignore[operator]

    result = p.tick()
    assert isinstance(result, RunRequest), p.cursor
    assert json.loads(p.cursor or "{}")["extra"] == {"resumed_after": failed}
    resumed = p.launch(result)
    wait_for("the resumed producer's heartbeat", lambda: p.heartbeat_run() == resumed, 90)
    wait_for("the resumed run to be healthy (stable 3 s)", p.healthy, 60)
    assert "closed stream:producer" in p.alert_tick()
    texts = [r["text"] for r in webhook.accepted]
    assert len(texts) == 2 and "recovered" in texts[1], texts


def test_the_store_away_longer_than_the_backoff_schedule_never_stops_spark(
    infrastructure: Settings,
    webhook: Webhook,
    platform_factory: Callable[..., Platform],
) -> None:
    from infra import services

    # base 1 s doubling to the 4 s cap: the whole schedule is spent after 3 failures. A run
    # that progressed for SUPERVISOR_STABLE_RUN_SECONDS ends a streak, so that time must be
    # above a failing start: from the run's start to the stream's exit (Python, the imports,
    # a lake check that fails at once, no JVM), a few seconds, over ten on a machine loaded
    # far beyond its cores. 30 s stays above that; the healthy run, whose JVM and query come
    # up first, is then healthy at its first progress report or the one after.
    p = platform_factory(
        "spark", base_backoff_seconds=1, max_backoff_seconds=4, alert_after_failures=3,
        stable_run_seconds=30, startup_grace_seconds=600, stale_heartbeat_seconds=300,
    )  # fmt: skip
    # The drill's own topic, created by the admin step as `make up` creates its topics: a
    # topic that Spark's first metadata request auto-creates may not have its partition
    # leaders yet when the query reads its offsets (a race that is not this drill's subject).
    ensure_drill_topics(p.finpipe.load())
    minio = services.minio_process(infrastructure)
    minio.stop()  # the object store is away
    reasons = []
    try:
        for _ in range(6):  # twice as many failures as the schedule has steps
            result = p.tick()
            while isinstance(result, SkipReason):
                assert result.skip_message.startswith("wait:"), result.skip_message
                reasons.append(result.skip_message)
                p.alert_tick()
                result = p.tick()
            run_id = p.launch(result)
            wait_for("the spark run to end", lambda r=run_id: p.run(r).is_finished, 120)
            assert p.run(run_id).tags[processes.EXITED_TAG] == str(exit_codes.TRANSIENT)
        assert "stopped" not in p.decisions
        assert any("backing off 4s" in r for r in reasons), reasons  # at the cap, retrying
        p.alert_tick()
        opened = [r["text"] for r in webhook.accepted]
        assert len(opened) == 1 and "spark keeps failing" in opened[0], opened
        assert "cannot open the lake" in opened[0], opened
    finally:
        services.start_infrastructure(infrastructure)  # the store is back

    healthy = None
    deadline = time.monotonic() + 240
    while healthy is None and time.monotonic() < deadline:
        result = p.tick()
        if isinstance(result, RunRequest):
            healthy = p.launch(result)
        time.sleep(0.5)
    assert healthy is not None, p.decisions
    wait_for("spark's heartbeat", lambda: p.heartbeat_run() == healthy, 120)
    wait_for("the spark run to be healthy (stable 30 s)", p.healthy, 180)
    assert "closed stream:spark" in p.alert_tick()
    p.alert_tick()
    texts = [r["text"] for r in webhook.accepted]
    assert len(texts) == 2 and "recovered" in texts[1], texts
    assert [r.run_id for r in p.runs() if not r.is_finished] == [healthy]
