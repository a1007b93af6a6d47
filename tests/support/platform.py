"""The whole platform for a drill module, started by the same code as `make up`, and the
probes the platform drills read it with.

``running_platform`` gives a run its own topics, lake and summaries prefixes, checkpoint,
receive log and Dagster home through the environment every component inherits, so that
nothing else is disturbed; it always ends with `make down` and leaves the broker and the
object store running for later tests.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from finpipe import health, lake
from finpipe.settings import Settings, load_settings
from finpipe_dagster.alerts.outbox import outbox_path
from finpipe_dagster.streams import pipes_bridge
from finpipe_dagster.streams.resources import STREAM_MODULES
from infra import services
from infra import stack as infra_stack
from infra.processes import pid_alive

# Dagster's cadences that the drills wait on, shortened through their settings (the
# daemon itself evaluates sensors about every 5 s, so shorter would change nothing).
# Their defaults are the graph's snapshot (tests/finpipe_dagster/test_definitions.py).
ALERTS_TICK_SECONDS = 5
# What the stream drills wait on: supervision, the lake's updates and freshness, alerts.
STREAM_DRILL_CADENCES = {
    "SUPERVISOR_SENSOR_INTERVAL_SECONDS": "5",
    "PROCESSED_TRADES_SENSOR_INTERVAL_SECONDS": "5",
    "ALERTS_SENSOR_INTERVAL_SECONDS": str(ALERTS_TICK_SECONDS),
    # Every minute still compacts the open day under the writer several times per drill.
    "LAKE_MAINTENANCE_SENSOR_INTERVAL_SECONDS": "60",
}
# And the summaries, for drills that judge them. Not shorter: a refresh is a run, and a
# run is a process that loads the code location (seconds of CPU), started again as soon as
# the last one ends while the lake receives data; at 10 s a platform spent about half a
# core on it alone, slowing every other test of the suite on two cores.
DRILL_CADENCES = {
    **STREAM_DRILL_CADENCES,
    "SUMMARIES_REFRESH_SENSOR_INTERVAL_SECONDS": "30",
    "LATE_DATA_SENSOR_INTERVAL_SECONDS": "30",
}


@contextlib.contextmanager
def running_platform(
    infrastructure: Settings, work: Path, env: Mapping[str, str], unset: tuple[str, ...] = ()
) -> Iterator[Settings]:
    """`make up` with this run's names (plus ``env``), `make down` at the end, whatever
    happened; ``unset`` are variables the environment must not hold (a file sets them)."""
    run = uuid.uuid4().hex[:8]
    names = {
        "KAFKA_TOPIC": f"drill-{run}",
        "KAFKA_DLQ_TOPIC": f"drill-{run}-dlq",
        "LAKE_PREFIX": f"drill-{run}/processed_trades",
        "SUMMARIES_PREFIX": f"drill-{run}/summaries",
        "SPARK_CHECKPOINT_DIR": str(work / "checkpoint"),
        "PRODUCER_LOG_DIR": str(work / "producer-log"),
        "DAGSTER_HOME": str(work / "dagster"),
    }
    full = {**names, **env}
    saved = {key: os.environ.get(key) for key in [*full, *unset]}
    for key in unset:
        os.environ.pop(key, None)
    os.environ.update(full)
    settings = load_settings()
    _forget_earlier_platform(settings)
    try:
        infra_stack.up(settings)
        yield settings
    finally:
        infra_stack.down(settings)
        _forget_earlier_platform(settings)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        # Later tests still need the broker and the object store (a drill may stop them).
        services.start_infrastructure(infrastructure)


def _forget_earlier_platform(settings: Settings) -> None:
    """The heartbeats and the alert outbox live in the shared test home's state folder:
    a platform of an earlier module must not lend its incidents or beats to this one."""
    for stream in infra_stack.STREAMS:
        health.health_path(settings, stream).unlink(missing_ok=True)
    outbox_path(settings.state_dir).unlink(missing_ok=True)


def beat(settings: Settings, stream: str) -> dict[str, Any] | None:
    found = health.read_health(settings, stream)
    if found and pid_alive(int(found["pid"])) and not found.get("final"):
        return found
    return None


def stream_pids(name: str) -> list[int]:
    """Live processes of one stream (this run's only: by topic)."""
    topic = os.environ["KAFKA_TOPIC"]
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        # The console script itself, or its module under Dagster's Pipes bridge; not the
        # JVM or Python workers it spawns.
        is_script = any(arg.rsplit("/", 1)[-1] == f"finpipe-{name}" for arg in argv[:2]) or (
            argv[1:4] == ["-m", pipes_bridge.MODULE, STREAM_MODULES[name]]
        )
        if is_script and f"KAFKA_TOPIC={topic}".encode() in environ:
            found.append(int(proc.name))
    # A child forked by a stream process (PySpark's launch of spark-submit, say) carries its
    # parent's command line until it execs: the same copy, not a second one.
    return [pid for pid in found if _parent(pid) not in found]


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state


def lake_coordinates(settings: Settings) -> tuple[int, int, dict[int, int]]:
    """(rows, distinct (partition, offset), rows per partition) of the whole lake."""
    con = lake.duckdb_with_lake(settings)
    rows, distinct = con.execute(
        "SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)) FROM processed_trades"
    ).fetchone()
    per_partition = dict(
        con.execute("SELECT kafka_partition, count(*) FROM processed_trades GROUP BY 1").fetchall()
    )
    return rows, distinct, per_partition
