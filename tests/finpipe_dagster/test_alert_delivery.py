"""Alerts reach a real local webhook exactly once, through outages and restarts.

The receiver is a real HTTP server in a thread; it answers 500 while "down". The alert
sensor runs against a real Dagster instance on disk, in this process and in fresh
processes (a daemon restart), sharing only what the platform shares: ``DAGSTER_HOME``
and ``FINPIPE_HOME``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, build_sensor_context
from dagster._core.instance.ref import InstanceRef

from finpipe.settings import load_settings
from finpipe_dagster.alerts.channel import AlertChannel
from finpipe_dagster.alerts.outbox import AlertOutbox, Message
from finpipe_dagster.alerts.sensors import build_alerts_sensor
from finpipe_dagster.definitions import build_resources
from finpipe_dagster.resources import FinpipeSettings
from tests.support.webhook import Webhook

alerts_sensor = build_alerts_sensor(load_settings())


@pytest.fixture
def webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Webhook]:
    hook = Webhook()
    monkeypatch.setenv("ALERT_WEBHOOK_URL", hook.url)
    monkeypatch.setenv("ALERT_RETRY_MAX_SECONDS", "0.2")  # default 300: same rule, shorter
    yield hook
    hook.close()


# A tick in a process of its own: what a restarted daemon does with the same storage.
TICK_IN_NEW_PROCESS = """
import sys
from dagster import AssetMaterialization, DagsterInstance, build_sensor_context
from dagster._core.instance.ref import InstanceRef
from finpipe.settings import load_settings
from finpipe_dagster.alerts.sensors import build_alerts_sensor
from finpipe_dagster.definitions import build_resources
from finpipe_dagster.lake.assets import PROCESSED_TRADES
from finpipe_dagster.resources import FinpipeSettings

instance = DagsterInstance.from_ref(InstanceRef.from_dir(sys.argv[1]))
if sys.argv[3:] == ["lake-updated"]:  # just now: the 2 s window is shorter than a start-up
    instance.report_runless_asset_event(AssetMaterialization(PROCESSED_TRADES))
finpipe = FinpipeSettings(finpipe_home=sys.argv[2], freshness_warn_seconds=1,
                          freshness_fail_seconds=2)
with build_sensor_context(instance=instance, resources=build_resources(finpipe)) as context:
    print(build_alerts_sensor(load_settings())(context).skip_message)
"""


class AlertTicks:
    def __init__(self, tmp_path: Path) -> None:
        self.dagster_home = tmp_path / "dagster"
        self.dagster_home.mkdir()
        self.finpipe_home = tmp_path / "finpipe"
        self.instance = DagsterInstance.from_ref(InstanceRef.from_dir(str(self.dagster_home)))
        self.resource = FinpipeSettings(
            finpipe_home=str(self.finpipe_home), freshness_warn_seconds=1, freshness_fail_seconds=2
        )

    def here(self) -> str:
        resources = build_resources(self.resource)
        with build_sensor_context(instance=self.instance, resources=resources) as context:
            return alerts_sensor(context).skip_message  # type: ignore[union-attr]

    def new_process(self, *flags: str) -> str:
        homes = [str(self.dagster_home), str(self.finpipe_home)]
        done = subprocess.run(
            [sys.executable, "-c", TICK_IN_NEW_PROCESS, *homes, *flags],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip().splitlines()[-1]


def test_a_webhook_answering_500_gets_the_open_and_the_recovery_once_across_restarts(
    webhook: Webhook, tmp_path: Path
) -> None:
    ticks = AlertTicks(tmp_path)
    assert "no change" in ticks.here()  # starts watching: fresh
    time.sleep(2.5)  # no lake update within the 2 s fail window
    webhook.down = True
    assert "opened lake_stale" in ticks.here()
    time.sleep(0.3)
    assert "failed, retry" in ticks.here()
    time.sleep(0.3)
    restarted = ticks.new_process()  # a daemon restart while the webhook is still down
    assert "no change" in restarted and "failed, retry" in restarted
    attempts_while_down = len(webhook.requests)
    assert attempts_while_down >= 3 and webhook.accepted == []

    webhook.down = False
    time.sleep(0.3)
    assert "delivered" in ticks.new_process()  # the open message, once back
    assert "nothing due" in ticks.here()

    recovered = ticks.new_process("lake-updated")  # the incident ends, seen after a restart
    assert "closed lake_stale" in recovered and "delivered" in recovered
    assert "nothing due" in ticks.new_process("lake-updated")

    texts = [r["text"] for r in webhook.accepted]
    assert len(texts) == 2, texts
    assert "finpipe incident: processed_trades is stale" in texts[0]
    assert "finpipe recovered after" in texts[1]
    keys = [r["key"] for r in webhook.accepted]
    assert len(set(keys)) == 2 and keys[0].endswith(":open") and keys[1].endswith(":recovery")


def test_a_long_outage_delivers_every_message_once_in_order(
    webhook: Webhook, tmp_path: Path
) -> None:
    outbox = AlertOutbox(tmp_path / "alerts.sqlite")
    channel = AlertChannel(settings=FinpipeSettings(finpipe_home=str(tmp_path)))
    webhook.down = True
    expected = []
    for i in range(5):  # five incidents open and recover during the outage
        opened = outbox.reconcile({f"i{i}": f"incident {i}"}, 100.0 + i, str, lambda t, s: t)
        closed = outbox.reconcile({}, 200.0 + i, str, lambda t, s: f"{t} recovered")
        expected += [m for _, m in opened + closed]

    def send(message: Message) -> bool:
        return channel.post(message.text, message.idempotency_key)

    def drain() -> list[str]:
        return outbox.drain(send, max_messages=4, budget_seconds=10, retry_max_seconds=0.05)

    for _ in range(6):  # the outage: each tick tries the oldest message only
        assert ["failed" in line for line in drain()] == [True]
        time.sleep(0.06)
    webhook.down = False
    while outbox.pending():
        time.sleep(0.06)
        assert len(drain()) <= 4
    assert [r["text"] for r in webhook.accepted] == expected
    assert len({r["key"] for r in webhook.accepted}) == 10
    assert all(r["text"] == expected[0] for r in webhook.requests if r["status"] == 500)


def test_a_hanging_webhook_cannot_stretch_a_tick(
    webhook: Webhook, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALERT_POST_TIMEOUT_SECONDS", "0.5")
    outbox = AlertOutbox(tmp_path / "alerts.sqlite")
    channel = AlertChannel(settings=FinpipeSettings(finpipe_home=str(tmp_path)))
    incidents = {f"i{i}": f"incident {i}" for i in range(3)}
    outbox.reconcile(incidents, 100.0, str, lambda t, s: t)
    webhook.delay = 3.0  # answers only after 3 s: longer than the POST timeout
    started = time.monotonic()
    report = outbox.drain(
        lambda m: channel.post(m.text, m.idempotency_key),
        max_messages=4,
        budget_seconds=2,
        retry_max_seconds=1,
    )
    assert time.monotonic() - started < webhook.delay  # cut off by the timeout, not waited out
    assert len(report) == 1 and "failed" in report[0]
    assert len(outbox.pending()) == 3
