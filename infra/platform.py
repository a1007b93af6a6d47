"""The local platform as a whole: what `make up`, `make down` and `make status` act on."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from finpipe.settings import Settings
from infra import artifacts, services
from infra.artifacts import say
from infra.processes import ManagedProcess


@dataclass(frozen=True)
class Component:
    name: str
    url: str
    process: ManagedProcess | None  # None: an external service, only checked


def components(settings: Settings) -> list[Component]:
    """Every part of the platform in start order (stop order is the reverse)."""
    kafka_local = services.kafka_is_local(settings)
    s3_local = services.is_loopback(services.s3_endpoint(settings)[0])
    return [
        Component(
            "kafka",
            f"kafka://{settings.kafka_server}",
            services.kafka_process(settings) if kafka_local else None,
        ),
        Component(
            "minio",
            f"{settings.s3_endpoint_url} (console http://127.0.0.1:{settings.minio_console_port})",
            services.minio_process(settings) if s3_local else None,
        ),
    ]


def provision(settings: Settings, *, browser: bool = False) -> None:
    """Fetch or build everything the platform and its tests need (reused when cached)."""
    artifacts.ensure_all(settings.cache_dir)
    if browser:
        ensure_chromium()


CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")


def chromium_path() -> str | None:
    found = os.environ.get("FINPIPE_CHROMIUM") or next(
        (p for p in CHROMIUM_PATHS if os.path.exists(p)), None
    )
    return found


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


def up(settings: Settings) -> None:
    provision(settings)
    say("starting Kafka and MinIO on loopback")
    services.start_infrastructure(settings)


def down(settings: Settings) -> list[str]:
    stopped = []
    for component in reversed(components(settings)):
        if component.process and component.process.stop():
            stopped.append(component.name)
    return stopped


def status_rows(settings: Settings) -> list[dict[str, str]]:
    rows = []
    for component in components(settings):
        proc = component.process
        if proc is None:
            state = "external"
            pid, log = "-", "-"
        else:
            pid_value = proc.pid()
            state = (
                "running"
                if pid_value and proc.is_ready()
                else ("starting/unhealthy" if pid_value else "stopped")
            )
            pid, log = str(pid_value or "-"), str(proc.log_file)
        rows.append(
            {"name": component.name, "state": state, "pid": pid, "url": component.url, "log": log}
        )
    return rows
