"""Alerts: one message when an incident starts and one when it recovers.

Open-source Dagster has no alert policies, so this sensor evaluates the incidents
itself on every tick; open incidents and their queued messages live in the durable
outbox (``alerts/outbox.py``) under ``FINPIPE_HOME/state``, drained within the tick's
time budget:

* ``lake_stale``: processed_trades' latest materialization is older than the freshness
  fail window (or none arrived within it since the sensor started);
* ``check_failed:<name>``: the latest result of an ERROR-severity check failed;
* ``stream:<stream>``: a stream keeps failing (``SUPERVISOR_ALERT_AFTER_FAILURES`` in a
  row) or stopped on a fault no retry fixes; it recovers once a run stays healthy.
"""

import time
from dataclasses import dataclass

from dagster import (
    AssetCheckKey,
    AssetCheckSeverity,
    DagsterInstance,
    DefaultSensorStatus,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)
from dagster._core.storage.asset_check_execution_record import (
    COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES,
)

from finpipe.settings import Settings
from finpipe_dagster.alerts.channel import AlertChannel
from finpipe_dagster.alerts.outbox import AlertOutbox, Message, outbox_path
from finpipe_dagster.lake.assets import PROCESSED_TRADES
from finpipe_dagster.lake.checks import CHECKS
from finpipe_dagster.resources import FinpipeSettings
from finpipe_dagster.streams.jobs import STREAMS
from finpipe_dagster.streams.policy import Decision
from finpipe_dagster.streams.resources import SupervisionPolicy
from finpipe_dagster.streams.sensors import current_decision


@dataclass(frozen=True)
class Incident:
    key: str
    text: str


def lake_staleness(
    instance: DagsterInstance, settings: Settings, watching_since: float, now: float
) -> Incident | None:
    event = instance.get_latest_materialization_event(PROCESSED_TRADES)
    last = event.timestamp if event is not None else None
    age = now - (last if last is not None else watching_since)
    if age <= settings.freshness_fail_seconds:
        return None
    what = f"last update {age:.0f}s ago" if last is not None else f"no update in {age:.0f}s"
    return Incident(
        "lake_stale",
        f"processed_trades is stale: {what} (fail window {settings.freshness_fail_seconds}s). "
        "Check the producer_stream and spark_stream runs.",
    )


def failed_checks(instance: DagsterInstance) -> list[Incident]:
    found = []
    for name in CHECKS:
        history = instance.event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(PROCESSED_TRADES, name),
            limit=1,
            status=set(COMPLETED_ASSET_CHECK_EXECUTION_RECORD_STATUSES),
        )
        if not history or history[0].event is None or history[0].event.dagster_event is None:
            continue
        evaluation = history[0].event.dagster_event.event_specific_data
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


@sensor(
    name="alerts_sensor",
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="One alert per incident start and one per recovery, to the webhook and the log.",
)
def alerts_sensor(
    context: SensorEvaluationContext,
    finpipe: FinpipeSettings,
    supervision: SupervisionPolicy,
    alerts: AlertChannel,
) -> SkipReason:
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
