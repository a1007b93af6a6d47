"""Alerts: one message when an incident starts and one when it recovers.

Open-source Dagster has no alert policies, so this sensor evaluates the incidents
itself on every tick and keeps the open ones in its cursor:

* ``lake_stale``: processed_trades' latest materialization is older than the freshness
  fail window (or none arrived within it since the sensor started);
* ``check_failed:<name>``: the latest result of an ERROR-severity check failed;
* ``supervisor_gave_up:<stream>``: a stream failed too often in a row to be restarted;
* ``producer_backlog``: the producer's oldest trade not yet in Kafka is older than
  ``PRODUCER_BACKLOG_ALERT_SECONDS`` (recovers when the backlog drains);
* ``producer_log``: the producer's receive log is near capacity or reading is paused.
"""

import json
import time
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetCheckKey,
    AssetCheckSeverity,
    DagsterInstance,
    DefaultSensorStatus,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from finpipe import health
from finpipe.health import STREAMS
from finpipe.settings import Settings
from finpipe_dagster.alerts.channel import AlertChannel
from finpipe_dagster.lake.assets import PROCESSED_TRADES
from finpipe_dagster.lake.checks import CHECKS
from finpipe_dagster.resources import FinpipeSettings
from finpipe_dagster.streams.decisions import current_decision
from finpipe_dagster.streams.resources import SupervisionPolicy


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
    incidents = failed_checks(instance)
    stale = lake_staleness(instance, finpipe.load(), watching_since, now)
    if stale is not None:
        incidents.append(stale)
    settings = finpipe.load()
    beat = health.read_health(settings, "producer")
    for key, text in health.producer_incidents(beat, settings.producer_backlog_alert_seconds):
        incidents.append(Incident(key, text))
    for stream in STREAMS:
        decision = current_decision(instance, finpipe, supervision.policy(), stream)
        if decision.action == "give_up":
            incidents.append(
                Incident(
                    f"supervisor_gave_up:{stream}",
                    f"{stream} supervisor gave up: {decision.reason}",
                )
            )
    return incidents


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
    state = json.loads(context.cursor or "{}")
    watching_since = float(state.get("watching_since", now))
    open_incidents: dict[str, dict] = state.get("open", {})
    current = {
        i.key: i
        for i in evaluate_incidents(context.instance, finpipe, supervision, watching_since, now)
    }
    sent = []
    for key, incident in current.items():
        if key not in open_incidents:
            alerts.send(f":red_circle: finpipe incident: {incident.text}", context.log)
            open_incidents[key] = {"since": now, "text": incident.text}
            sent.append(f"opened {key}")
    for key in [k for k in open_incidents if k not in current]:
        lasted = now - float(open_incidents[key]["since"])
        alerts.send(
            f":large_green_circle: finpipe recovered after {lasted:.0f}s: "
            f"{open_incidents.pop(key)['text']}",
            context.log,
        )
        sent.append(f"closed {key}")
    context.update_cursor(json.dumps({"watching_since": watching_since, "open": open_incidents}))
    return SkipReason(
        f"{', '.join(sent) or 'no change'}; open incidents: {sorted(open_incidents) or 'none'}"
    )
