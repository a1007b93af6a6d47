"""The local platform as a whole: what `make up`, `make down` and `make status` act on.

Start order: Kafka, MinIO, the simulator (when no Finnhub token is set), Dagster's
webserver and daemon, Streamlit, the control-plane metrics exporter, and Prometheus when
``PROMETHEUS_ENABLED``. Dagster's supervisor sensors then start the producer and Spark
streams. Stop order: the daemon first (so nothing restarts the streams), the
streams (SIGTERM: the producer flushes, Spark finishes its batch), then the rest in
reverse start order.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from finpipe import health, lake_migration
from finpipe.settings import Settings, is_loopback_host
from finpipe_dagster.instance import ensure_dagster_home, fail_runs_left_live
from infra import artifacts, monitoring, services
from infra.artifacts import say
from infra.processes import ManagedProcess, ServiceError, pid_alive, stop_together

REPO_ROOT = Path(__file__).resolve().parents[1]
STREAMS = health.STREAMS


@dataclass(frozen=True)
class Component:
    name: str
    url: str
    process: ManagedProcess | None  # None: an external service, only checked
    # Kafka and MinIO: started by services.start_infrastructure, stopped last.
    infrastructure: bool = False


def _bin(name: str) -> str:
    """A console script of this virtualenv (the one running this code)."""
    candidate = Path(sys.executable).with_name(name)
    return str(candidate) if candidate.exists() else name


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _dagster_env(settings: Settings) -> dict[str, str]:
    env = {"DAGSTER_HOME": str(settings.dagster_home)}
    # The Spark stream that the daemon's runs launch finds its connector jars here.
    env["SPARK_JARS"] = ",".join(str(p) for p in settings.spark_jars) or str(
        artifacts.spark_jars_folder(settings.cache_dir)
    )
    if settings.dagster_postgres_url is not None:
        # dagster.yaml reads it with `env:` and it may be set in .env only (never logged).
        env["DAGSTER_POSTGRES_URL"] = settings.dagster_postgres_url.get_secret_value()
    return env


def simulator_process(settings: Settings) -> ManagedProcess:
    argv = [
        _bin("finpipe-simulator"),
        "--host",
        "127.0.0.1",
        "--port",
        str(settings.simulator_port),
    ]
    if settings.replay_file:
        argv += ["--replay", str(settings.replay_file), "--speed", f"{settings.replay_speed:g}"]
    return ManagedProcess(
        name="simulator",
        argv=argv,
        home=settings.home,
        ports=[("127.0.0.1", settings.simulator_port)],
        cwd=REPO_ROOT,
        ready_timeout=30,
    )


def dagster_webserver_process(settings: Settings) -> ManagedProcess:
    port = settings.dagster_port
    return ManagedProcess(
        name="dagster-webserver",
        argv=[
            _bin("dagster-webserver"),
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        home=settings.home,
        ports=[("127.0.0.1", port)],
        env=_dagster_env(settings),
        cwd=REPO_ROOT,
        ready=lambda: _http_ok(f"http://127.0.0.1:{port}/server_info"),
        ready_timeout=180,
    )


def dagster_daemon_process(settings: Settings) -> ManagedProcess:
    return ManagedProcess(
        name="dagster-daemon",
        argv=[_bin("dagster-daemon"), "run", "-w", "workspace.yaml"],
        home=settings.home,
        env=_dagster_env(settings),
        cwd=REPO_ROOT,
        ready_timeout=60,
        stop_timeout=60,
    )


def streamlit_process(settings: Settings) -> ManagedProcess:
    port = settings.streamlit_port
    return ManagedProcess(
        name="streamlit",
        argv=[
            _bin("finpipe-dashboard"),  # streamlit run streamlit_app/dashboard.py, imports first
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
        ],
        home=settings.home,
        ports=[("127.0.0.1", port)],
        cwd=REPO_ROOT,
        ready=lambda: _http_ok(f"http://127.0.0.1:{port}/_stcore/health"),
        ready_timeout=90,
    )


def control_metrics_process(settings: Settings) -> ManagedProcess:
    port = settings.control_metrics_port
    return ManagedProcess(
        name="control-metrics",
        argv=[_bin("finpipe-control-metrics")],
        home=settings.home,
        ports=[("127.0.0.1", port)],
        env=_dagster_env(settings),
        cwd=REPO_ROOT,
        ready=lambda: _http_ok(f"http://127.0.0.1:{port}/metrics"),
        ready_timeout=60,
    )


def components(settings: Settings) -> list[Component]:
    """Every part of the platform in start order (stop order is the reverse)."""
    s3_local = is_loopback_host(services.s3_endpoint(settings)[0])
    if services.kafka_is_local(settings):
        parts = [
            Component(node.name, f"kafka://{node.address}", process, infrastructure=True)
            for node, process in zip(
                services.kafka_nodes(settings), services.kafka_processes(settings), strict=True
            )
        ]
    else:
        parts = [Component("kafka", f"kafka://{settings.kafka_server}", None, infrastructure=True)]
    parts.append(
        Component(
            "minio",
            f"{settings.s3_endpoint_url} (console http://127.0.0.1:{settings.minio_console_port})",
            services.minio_process(settings) if s3_local else None,
            infrastructure=True,
        )
    )
    if settings.uses_simulator:
        parts.append(Component("simulator", settings.feed_url, simulator_process(settings)))
    parts += [
        Component(
            "dagster-webserver",
            f"http://127.0.0.1:{settings.dagster_port}",
            dagster_webserver_process(settings),
        ),
        Component(
            "dagster-daemon", "(sensors, schedules, run queue)", dagster_daemon_process(settings)
        ),
        Component(
            "streamlit", f"http://127.0.0.1:{settings.streamlit_port}", streamlit_process(settings)
        ),
    ]
    if settings.control_metrics_port:
        parts.append(
            Component(
                "control-metrics",
                f"http://127.0.0.1:{settings.control_metrics_port}/metrics",
                control_metrics_process(settings),
            )
        )
    if settings.prometheus_enabled:
        parts.append(
            Component(
                "prometheus",
                monitoring.prometheus_url(settings),
                monitoring.prometheus_process(settings),
            )
        )
    return parts


PROVISIONERS = {
    "kafka": artifacts.ensure_kafka,
    "spark": artifacts.ensure_spark_connectors,
    "minio": artifacts.ensure_minio,
}


def provision(
    settings: Settings,
    *,
    browser: bool = False,
    compose: bool = False,
    delta_spark: bool = False,
    prometheus: bool = False,
    only: list[str] | None = None,
) -> None:
    """Fetch or build everything the platform needs (reused when cached); the tests also
    need Chromium (``browser``), Docker Compose (``compose``) and Prometheus
    (``prometheus``, also built for `make up` when ``PROMETHEUS_ENABLED``)."""
    for name, ensure in PROVISIONERS.items():
        if only is None or name in only:
            ensure(settings.cache_dir)
    if compose:
        artifacts.ensure_compose(settings.cache_dir)
    if delta_spark:
        artifacts.ensure_delta_spark(settings.cache_dir)
    if prometheus or (only is None and settings.prometheus_enabled):
        artifacts.ensure_prometheus(settings.cache_dir)
    if browser:
        ensure_chromium()


CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
# Headless Chromium as root in a container, with no network beyond loopback.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium_path() -> str | None:
    return os.environ.get("FINPIPE_CHROMIUM") or next(
        (p for p in CHROMIUM_PATHS if os.path.exists(p)), None
    )


def ensure_chromium() -> str:
    """Debian's chromium for the browser tests; installed with apt-get when missing."""
    found = chromium_path()
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise artifacts.ProvisioningError(
            "the browser tests need Chromium: install Debian's `chromium` package "
            "(sudo apt-get install chromium) or set FINPIPE_CHROMIUM to its path"
        )
    say("installing Chromium from Debian's packages for the browser tests")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run([apt, "-q", "update"], check=True, env=env)
    subprocess.run(
        [apt, "-q", "install", "-y", "--no-install-recommends", "chromium"], check=True, env=env
    )
    found = chromium_path()
    if not found:
        raise artifacts.ProvisioningError("apt-get installed chromium but no binary was found")
    return found


def _prepare_dagster_home(settings: Settings) -> None:
    settings.dagster_home.mkdir(parents=True, exist_ok=True)
    ensure_dagster_home(settings)
    if dagster_daemon_process(settings).pid() or dagster_webserver_process(settings).pid():
        return  # up already: its runs are its own
    from dagster import DagsterInstance

    # The instance reads DAGSTER_HOME (and the PostgreSQL URL) as its processes will.
    saved = {key: os.environ.get(key) for key in _dagster_env(settings)}
    os.environ.update(_dagster_env(settings))
    try:
        with DagsterInstance.get() as instance:
            failed = fail_runs_left_live(instance)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    if failed:
        say(
            f"marked {len(failed)} run(s) failed that the last stop left unfinished "
            f"(their workers are gone): {', '.join(r[:8] for r in failed)}"
        )


def up(settings: Settings) -> None:
    provision(settings)
    say("starting Kafka and MinIO")
    services.start_infrastructure(settings)
    problem = lake_migration.old_layout_problem(settings)
    if problem is not None:
        raise ServiceError(problem)
    _prepare_dagster_home(settings)
    if settings.prometheus_enabled:
        monitoring.write_prometheus_config(settings)
    for component in components(settings):
        if component.infrastructure:
            continue
        assert component.process is not None
        say(f"starting {component.name}")
        component.process.start()
    say("platform is up; Dagster's sensors now start the producer and Spark streams")


def stop_streams(settings: Settings, timeout: float = 90.0) -> list[str]:
    """SIGTERM the producer and Spark processes (found by their heartbeat files) and wait."""
    stopping: dict[str, int] = {}
    for stream in STREAMS:
        beat = health.read_health(settings, stream)
        pid = int(beat["pid"]) if beat and beat.get("pid") else None
        if pid and pid_alive(pid):
            os.kill(pid, signal.SIGTERM)
            stopping[stream] = pid
    deadline = time.monotonic() + timeout
    while any(pid_alive(p) for p in stopping.values()) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in stopping.values():
        if pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return list(stopping)


def down(settings: Settings) -> list[str]:
    parts = components(settings)
    by_name = {c.name: c for c in parts}
    stopped = []
    daemon = by_name["dagster-daemon"].process
    if daemon is not None and daemon.stop():
        stopped.append("dagster-daemon")
    stopped += stop_streams(settings)
    for component in reversed(parts):
        if component.infrastructure:
            continue
        if component.process and component.process.stop():
            stopped.append(component.name)
    # Kafka's brokers at once: one stopped after the others would wait for a quorum.
    infrastructure = [c.process for c in reversed(parts) if c.infrastructure and c.process]
    return stopped + stop_together(infrastructure)


def status_rows(settings: Settings) -> list[dict[str, str]]:
    rows = []
    for component in components(settings):
        proc = component.process
        if proc is None:
            state, pid, log = "external", "-", "-"
        else:
            pid_value = proc.pid()
            if pid_value is None:
                state = "stopped"
            else:
                state = "running" if proc.is_ready() else "unhealthy"
            pid, log = str(pid_value or "-"), str(proc.log_file)
        rows.append(
            {"name": component.name, "state": state, "pid": pid, "url": component.url, "log": log}
        )
    for stream in STREAMS:
        beat = health.read_health(settings, stream)
        age = health.heartbeat_age_seconds(beat)
        if beat is None or age is None:
            state, pid = "no heartbeat yet", "-"
        else:
            alive = pid_alive(int(beat.get("pid", 0) or 0))
            state = f"{'running' if alive else 'stopped'}, heartbeat {age:.0f}s ago"
            pid = str(beat.get("pid", "-"))
        rows.append(
            {
                "name": f"{stream} stream",
                "state": state,
                "pid": pid,
                "url": "(run by Dagster)",
                "log": str(health.health_path(settings, stream)),
            }
        )
    rows.append(spark_ui_row(settings))
    rows += metrics_rows(settings)
    return rows


def metrics_rows(settings: Settings) -> list[dict[str, str]]:
    """Every Prometheus endpoint of the platform, and whether it answers now."""
    rows = []
    for job, url in monitoring.metrics_endpoints(settings).items():
        if job == "finpipe_control":  # a component of its own (its row above)
            continue
        state = "answering" if _http_ok(url) else "not answering"
        name = job.replace("finpipe_", "") + " metrics"
        rows.append({"name": name, "state": state, "pid": "-", "url": url, "log": "-"})
    return rows


def spark_ui_row(settings: Settings) -> dict[str, str]:
    """The Spark driver's UI: the URL the running job reported (Spark moves to the next
    port when SPARK_UI_PORT is taken), else where it will listen."""
    beat = health.read_health(settings, "spark") or {}
    pid = int(beat.get("pid", 0) or 0)
    url = beat.get("spark_ui_url")
    if url and pid and pid_alive(pid) and beat.get("status") in {"running", "starting"}:
        state, shown_pid = "running", str(pid)
    else:
        state, shown_pid = "not running", "-"
        url = f"http://127.0.0.1:{settings.spark_ui_port}"
    return {"name": "spark ui", "state": state, "pid": shown_pid, "url": str(url), "log": "-"}


def stream_counters(settings: Settings) -> dict[str, dict[str, object]]:
    """The latest heartbeat of each stream, for `make status`."""
    return {s: beat for s in STREAMS if (beat := health.read_health(settings, s))}
