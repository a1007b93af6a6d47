"""Alerts: one message when an incident starts and one when it recovers.

Open-source Dagster has no alert policies, so this sensor evaluates the incidents
itself on every tick; open incidents and their queued messages live in the durable
outbox (``alerts/outbox.py``) under ``FINPIPE_HOME/state``, drained within the tick's
time budget:

* ``lake_stale``: processed_trades' latest materialization is older than the freshness
  fail window (or none arrived within it since the sensor started);
* ``check_failed:<name>``: the latest result of an ERROR-severity check failed;
* ``stream:<stream>``: a stream keeps failing (``SUPERVISOR_ALERT_AFTER_FAILURES`` in a
  row) or stopped on a fault no retry fixes; it recovers once a run stays healthy;
* ``producer_backlog``: the producer's oldest trade not yet in Kafka is older than
  ``PRODUCER_BACKLOG_ALERT_SECONDS`` (recovers when the backlog drains);
* ``producer_log``: the producer's receive log is near capacity or reading is paused.
"""

import time
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetCheckKey,
    AssetCheckSeverity,
    DagsterInstance,
    DefaultSensorStatus,
    SensorDefinition,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from finpipe import health
from finpipe.health import STREAMS
from finpipe.settings import Settings
from finpipe_dagster.alerts.channel import AlertChannel
from finpipe_dagster.alerts.outbox import AlertOutbox, Message, outbox_path
from finpipe_dagster.lake.assets import PROCESSED_TRADES
from finpipe_dagster.lake.checks import CHECKS
from finpipe_dagster.resources import FinpipeSettings
from finpipe_dagster.streams.decisions import current_decision
from finpipe_dagster.streams.policy import Decision
from finpipe_dagster.streams.resources import SupervisionPolicy


@dataclass(frozen=True)
class Incident:
    key: str
    text: str


def lake_last_update(instance: DagsterInstance) -> float | None:
    """When processed_trades was last materialized (the lake's last recorded update)."""
    event = instance.get_latest_materialization_event(PROCESSED_TRADES)
    return event.timestamp if event is not None else None


def lake_age_seconds(last: float | None, watching_since: float, now: float) -> float:
    """Since the lake's last update, or since watching started when none arrived yet."""
    return now - (last if last is not None else watching_since)


def lake_staleness(
    instance: DagsterInstance, settings: Settings, watching_since: float, now: float
) -> Incident | None:
    last = lake_last_update(instance)
    age = lake_age_seconds(last, watching_since, now)
    if age <= settings.freshness_fail_seconds:
        return None
    what = f"last update {age:.0f}s ago" if last is not None else f"no update in {age:.0f}s"
    return Incident(
        "lake_stale",
        f"processed_trades is stale: {what} (fail window {settings.freshness_fail_seconds}s). "
        "Check the producer_stream and spark_stream runs.",
    )


COMPLETED_CHECK_STATUSES = frozenset({"SUCCEEDED", "FAILED"})
"""Execution statuses of a check that has a result (not planned, not skipped)."""
_HISTORY_PAGE = 10


def latest_completed_check(instance: DagsterInstance, key: AssetCheckKey) -> Any | None:
    """The newest execution record of ``key`` that has a result, or None."""
    cursor = None
    while True:
        page = instance.event_log_storage.get_asset_check_execution_history(
            key, limit=_HISTORY_PAGE, cursor=cursor
        )
        for record in page:
            if record.status.value in COMPLETED_CHECK_STATUSES:
                return record
        if len(page) < _HISTORY_PAGE:
            return None
        cursor = page[-1].id


def failed_checks(instance: DagsterInstance) -> list[Incident]:
    found = []
    for name in CHECKS:
        record = latest_completed_check(instance, AssetCheckKey(PROCESSED_TRADES, name))
        if record is None or record.event is None or record.event.dagster_event is None:
            continue
        evaluation = record.event.dagster_event.event_specific_data
        if evaluation.passed or evaluation.severity != AssetCheckSeverity.ERROR:  # type: ignore[union-attr]
            continue
        failing = evaluation.metadata.get("failing_rows")  # type: ignore[union-attr]
        detail = f" ({failing.value} failing)" if failing is not None else ""
        found.append(
            Incident(f"check_failed:{name}", f"processed_trades check {name} failed{detail}.")
        )
    return found


def evaluate_incidents(
    instance: DagsterInstance,
    finpipe: FinpipeSettings,
    supervision: SupervisionPolicy,
    watching_since: float,
    now: float,
) -> list[Incident]:
    settings = finpipe.load()
    incidents = failed_checks(instance)
    stale = lake_staleness(instance, settings, watching_since, now)
    if stale is not None:
        incidents.append(stale)
    beat = health.read_health(settings, "producer")
    for key, text in health.producer_incidents(beat, settings.producer_backlog_alert_seconds):
        incidents.append(Incident(key, text))
    for stream in STREAMS:
        decision = current_decision(instance, settings, supervision.policy(settings), stream)
        if decision.incident is not None:
            incidents.append(Incident(f"stream:{stream}", stream_incident_text(stream, decision)))
    return incidents


def stream_incident_text(stream: str, decision: Decision) -> str:
    error = decision.last_error or "see the failed runs' logs"
    if decision.incident == "stopped":
        return (
            f"{stream} stopped: a fault no retry fixes: {error}. Fix it, then resume: turn "
            f"{stream}_supervisor off and on (Automation)"
        )
    return (
        f"{stream} keeps failing: {decision.failures_in_row} failures in a row; last error: "
        f"{error}. The supervisor keeps retrying; this closes once a run stays healthy"
    )


def send_alerts(
    context: SensorEvaluationContext,
    finpipe: FinpipeSettings,
    supervision: SupervisionPolicy,
    alerts: AlertChannel,
) -> SkipReason:
    """One tick of ``alerts_sensor``."""
    now = time.time()
    settings = finpipe.load()
    # All state is in the outbox, none in the cursor: a tick cut off before its cursor was
    # saved, or a daemon restart, finds every incident and message where it left them.
    outbox = AlertOutbox(outbox_path(settings.state_dir))
    watching_since = outbox.watching_since(now)
    current = {
        i.key: i.text
        for i in evaluate_incidents(context.instance, finpipe, supervision, watching_since, now)
    }
    # Intent first: the change and its message are durable before anything is sent.
    changes = outbox.reconcile(
        current,
        now,
        opened=lambda text: f":red_circle: finpipe incident: {text}",
        recovered=lambda text, lasted: (
            f":large_green_circle: finpipe recovered after {lasted:.0f}s: {text}"
        ),
    )
    for _, text in changes:
        alerts.log(text, context.log)

    def send(message: Message) -> bool:
        return alerts.post(message.text, message.idempotency_key, context.log)

    delivery = outbox.drain(
        send,
        max_messages=settings.alert_max_per_tick,
        budget_seconds=settings.alert_max_per_tick * settings.alert_post_timeout_seconds,
        retry_max_seconds=settings.alert_retry_max_seconds,
    )
    waiting = len(outbox.pending())
    return SkipReason(
        f"{', '.join(c for c, _ in changes) or 'no change'}; open incidents: "
        f"{sorted(outbox.open_incidents()) or 'none'}; "
        f"delivery: {'; '.join(delivery) or 'nothing due'}; {waiting} message(s) waiting"
    )


def build_alerts_sensor(settings: Settings) -> SensorDefinition:
    return sensor(
        name="alerts_sensor",
        minimum_interval_seconds=settings.alerts_sensor_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING,
        description=(
            "One alert per incident start and one per recovery, to the webhook and the log."
        ),
    )(send_alerts)
