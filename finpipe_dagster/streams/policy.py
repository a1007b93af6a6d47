"""What a supervisor does about one stream: a pure function of runs, processes and time.

Kept free of Dagster's instance so every rule is unit-tested on plain values; the sensor
in ``sensors.py`` gathers the inputs and carries out the decision.

The rules, in order:

* a process of an earlier run that may still be alive blocks any new copy: it is signalled
  (SIGTERM, then SIGKILL after a grace) until it is confirmed gone; one that cannot be
  checked (another host) waits for an operator;
* a live run is left alone while its own heartbeat is fresh; a stale one is replaced only
  once its process is confirmed gone;
* a run is healthy once its stream has shown progress (``health.PROGRESS_KEY``; alive
  for a stream that reports none) for the stable time; only that ends a failure streak
  and closes its incident, which every other decision carries on;
* a run that exited ``NO_RETRY`` stops the retries until an operator resumes the sensor
  (turns it off and on, which Dagster records as the sensor's start time);
* any other failure is retried for ever, waiting ``base x 2^(n-1)`` seconds, at most the cap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from finpipe import exit_codes
from finpipe_dagster.instance import LIVE_RUN_STATUSES

TERMINATED_BY_TAG = "finpipe/terminated_by"
SUPERVISOR = "supervisor"

Action = Literal["launch", "skip", "wait", "replace", "stop_old", "wait_old", "stopped"]
ProcessState = Literal["alive", "gone", "unknown"]
Incident = Literal["keeps_failing", "stopped"]


@dataclass(frozen=True)
class RunView:
    run_id: str
    status: str  # DagsterRunStatus.value
    create_ts: float
    start_ts: float | None = None
    end_ts: float | None = None
    terminated_by_supervisor: bool = False
    exit_code: int | None = None
    last_error: str | None = None
    # When the stream last showed progress (from its final heartbeat, recorded at exit);
    # None: it reports no progress, and is judged by how long it lived.
    progressed_until: float | None = None

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_RUN_STATUSES


@dataclass(frozen=True)
class ProcessView:
    """The stream process a run started, as probed on this host."""

    run_id: str
    pid: int
    state: ProcessState
    where: str  # "pid 123 on host h", for messages
    identity: str = ""  # host:pid:start, what the sensor signals

    @property
    def may_be_alive(self) -> bool:
        return self.state != "gone"


@dataclass(frozen=True)
class Heartbeat:
    ts: float
    run_id: str | None = None
    pid: int | None = None
    # The process says it is still starting (a JVM and a query coming up): judged by the
    # startup grace from the run's start, not by the age of this beat.
    starting: bool = False
    # Whether the stream reports progress besides being alive (``health.PROGRESS_KEY``),
    # and when it last did (None: not yet). One that does not is judged by ``ts``.
    reports_progress: bool = False
    progress_ts: float | None = None

    @property
    def progressed_at(self) -> float | None:
        return self.progress_ts if self.reports_progress else self.ts


@dataclass(frozen=True)
class Policy:
    stale_heartbeat_seconds: float = 120.0
    startup_grace_seconds: float = 240.0
    base_backoff_seconds: float = 5.0
    max_backoff_seconds: float = 300.0
    stable_run_seconds: float = 300.0
    alert_after_failures: int = 3
    kill_grace_seconds: float = 30.0


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    terminate: tuple[str, ...] = ()
    stop: tuple[ProcessView, ...] = ()
    failures_in_row: int = 0
    next_attempt_ts: float | None = None
    healthy: bool = False
    incident: Incident | None = None
    last_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_cursor(self, stream: str, now: float) -> dict[str, Any]:
        return {"stream": stream, "at": now, **asdict(self)}


def _is_failure(run: RunView) -> bool:
    return run.status == "FAILURE" or (run.status == "CANCELED" and run.terminated_by_supervisor)


def _finished_newest_first(runs: list[RunView]) -> list[RunView]:
    return sorted((r for r in runs if not r.is_live), key=lambda r: r.create_ts, reverse=True)


def failing_streak(runs: list[RunView], policy: Policy) -> list[RunView]:
    """Failed runs since the last clean end, newest first; a run that was healthy (it kept
    progressing for the stable time) before it failed ends the streak."""
    streak: list[RunView] = []
    for run in _finished_newest_first(runs):
        if not _is_failure(run):
            break
        streak.append(run)
        until = run.end_ts if run.progressed_until is None else run.progressed_until
        lived = (until or 0) - (run.start_ts or run.end_ts or 0)
        if lived >= policy.stable_run_seconds:
            break
    return streak


def failures_in_row(runs: list[RunView], policy: Policy) -> int:
    return len(failing_streak(runs, policy))


def backoff_seconds(streak: int, policy: Policy) -> float:
    if streak <= 0:
        return 0.0
    # The exponent is capped too: 2**n overflows a float long before "for ever" ends.
    return min(policy.base_backoff_seconds * 2 ** min(streak - 1, 32), policy.max_backoff_seconds)


def _incident(streak: list[RunView], healthy: bool, policy: Policy) -> Incident | None:
    if healthy or not streak:
        return None
    if any(r.exit_code == exit_codes.NO_RETRY for r in streak):
        return "stopped"
    return "keeps_failing" if len(streak) >= policy.alert_after_failures else None


def _last_error(streak: list[RunView]) -> str | None:
    return next((r.last_error for r in streak if r.last_error), None)


def decide(
    runs: list[RunView],
    heartbeat: Heartbeat | None,
    now: float,
    policy: Policy,
    processes: list[ProcessView] | None = None,
    resumed_at: float | None = None,
) -> Decision:
    """One supervisor tick. ``runs`` are the stream's recent runs in any order;
    ``processes`` the probed processes of runs whose worker did not see them exit;
    ``resumed_at`` when an operator last (re)started the supervisor sensor."""
    processes = processes or []
    live = sorted((r for r in runs if r.is_live), key=lambda r: r.create_ts)
    live_ids = {r.run_id for r in live}
    lingering = [p for p in processes if p.run_id not in live_ids and p.may_be_alive]
    streak = failing_streak(runs, policy)
    # Only a healthy run closes an incident, so every decision that is not about a healthy
    # run carries it on: waiting for an old process or replacing a stuck run must not read
    # as a recovery for one tick and reopen the incident on the next.
    context = {
        "failures_in_row": len(streak),
        "last_error": _last_error(streak),
        "incident": _incident(streak, False, policy),
    }
    if lingering:
        return _wait_for_old_processes(lingering, context)
    if live:
        return _decide_live(live, heartbeat, now, policy, processes, streak, context)
    return _decide_stopped(runs, streak, now, policy, resumed_at, context)


def _wait_for_old_processes(lingering: list[ProcessView], context: dict[str, Any]) -> Decision:
    unknown = [p for p in lingering if p.state == "unknown"]
    if unknown:
        where = ", ".join(f"{p.where} (run {p.run_id})" for p in unknown)
        return Decision(
            "wait_old",
            f"waiting for old process: cannot confirm that {where} is gone, so no new copy "
            "starts; stop it where it runs, then the supervisor continues",
            **context,
        )
    where = ", ".join(f"{p.where} (run {p.run_id}, finished)" for p in lingering)
    return Decision(
        "stop_old",
        f"waiting for old process: {where} is still alive; stopping it before any new copy",
        stop=tuple(lingering),
        **context,
    )


def _decide_live(
    live: list[RunView],
    heartbeat: Heartbeat | None,
    now: float,
    policy: Policy,
    processes: list[ProcessView],
    streak: list[RunView],
    context: dict[str, Any],
) -> Decision:
    # A CANCELING run still has (or had) a process: judged like a STARTED one, so a hung
    # process whose worker cannot finish the cancel is stopped, not waited on for ever.
    started = [r for r in live if r.status in {"STARTED", "CANCELING"}]
    keep = started[0] if started else live[0]
    extras = tuple(r.run_id for r in live if r is not keep)
    if keep.status in {"STARTED", "CANCELING"}:
        began = keep.start_ts or keep.create_ts
        own = heartbeat is not None and (
            heartbeat.run_id == keep.run_id or (heartbeat.run_id is None and heartbeat.ts >= began)
        )
        if own and heartbeat is not None and heartbeat.ts >= began and not heartbeat.starting:
            age, limit, what = now - heartbeat.ts, policy.stale_heartbeat_seconds, "last heartbeat"
        elif own and heartbeat is not None and heartbeat.ts >= began:
            age, limit, what = now - began, policy.startup_grace_seconds, "start (still starting)"
        else:
            age, limit, what = now - began, policy.startup_grace_seconds, "start without heartbeat"
        has_process = any(p.run_id == keep.run_id for p in processes)
        if age > limit and (keep.status == "STARTED" or has_process):
            stale = (
                f"run {keep.run_id} is {keep.status} but its {what} was {age:.0f}s ago"
                f" (limit {limit:.0f}s)"
            )
            return _replace_stale(keep, extras, processes, stale, age, context)
        progressed = heartbeat.progressed_at if own and heartbeat is not None else None
        # Healthy: the stream has been doing its work for the stable time, not merely alive.
        # A Spark query that cannot reach Kafka keeps its process and heartbeat for minutes
        # before it fails; counted as healthy, it would close "keeps failing" mid-outage.
        healthy = (
            keep.status == "STARTED"
            and what == "last heartbeat"
            and progressed is not None
            and progressed - began >= policy.stable_run_seconds
            and now - progressed <= policy.stale_heartbeat_seconds
        )
        if not extras and keep.status == "STARTED":
            return Decision(
                "skip",
                f"run {keep.run_id} is STARTED and reporting"
                + _health_note(healthy, progressed, now, policy),
                healthy=healthy,
                **{**context, "incident": _incident(streak, healthy, policy)},
            )
    if extras:
        return Decision(
            "skip",
            f"run {keep.run_id} is {keep.status}; terminating extra copies {list(extras)}",
            terminate=extras,
            **context,
        )
    return Decision("skip", f"run {keep.run_id} is {keep.status}", **context)


def _health_note(healthy: bool, progressed: float | None, now: float, policy: Policy) -> str:
    if healthy:
        return " (healthy)"
    stable = f"healthy once it has progressed for {policy.stable_run_seconds:.0f}s"
    if progressed is None:
        return f" ({stable}: no progress reported yet)"
    if now - progressed > policy.stale_heartbeat_seconds:
        return f" ({stable}: last progress {now - progressed:.0f}s ago)"
    return f" ({stable})"


def _replace_stale(
    keep: RunView,
    extras: tuple[str, ...],
    processes: list[ProcessView],
    stale: str,
    age: float,
    context: dict[str, Any],
) -> Decision:
    process = next((p for p in processes if p.run_id == keep.run_id), None)
    extra = {"heartbeat_age_seconds": round(age, 1)}
    if process is not None and process.state == "unknown":
        return Decision(
            "wait_old",
            f"{stale}; waiting for old process: cannot confirm that {process.where} is gone,"
            " so it is not replaced; stop it where it runs",
            extra=extra,
            **context,
        )
    if process is not None and process.state == "alive":
        return Decision(
            "stop_old",
            f"{stale}; waiting for old process: {process.where} is still alive, stopping it"
            " before a replacement starts",
            terminate=(keep.run_id, *extras),
            stop=(process,),
            extra=extra,
            **context,
        )
    gone = f"{process.where} is gone" if process else "it never started a stream process"
    return Decision(
        "replace",
        f"{stale}; {gone}: marking it failed and starting one replacement",
        terminate=(keep.run_id, *extras),
        extra=extra,
        **context,
    )


def _decide_stopped(
    runs: list[RunView],
    streak: list[RunView],
    now: float,
    policy: Policy,
    resumed_at: float | None,
    context: dict[str, Any],
) -> Decision:
    if not runs:
        return Decision("launch", "no run of this stream exists yet")
    newest = _finished_newest_first(runs)[0]
    resumed = resumed_at is not None and resumed_at > (newest.end_ts or newest.create_ts)
    if newest.exit_code == exit_codes.NO_RETRY and not resumed:
        return Decision(
            "stopped",
            f"not restarting: run {newest.run_id} exited with code {exit_codes.NO_RETRY}, a fault"
            f" no retry fixes: {newest.last_error or 'see the run log'}. Fix that, then resume:"
            " turn this sensor off and on",
            **context,
        )
    # A resume is the operator saying "fixed": earlier failures no longer delay the retry.
    counted = [r for r in streak if not resumed or (r.end_ts or r.create_ts) >= resumed_at]  # type: ignore[operator]
    extra = {"resumed_after": newest.run_id} if resumed and streak else {}
    if not counted:
        what = (
            f"resumed after run {newest.run_id}"
            if extra
            else f"last run {newest.run_id} ended {newest.status}"
        )
        return Decision("launch", f"{what}; restarting", extra=extra, **context)
    last_end = max((r.end_ts or r.create_ts) for r in counted)
    wait = backoff_seconds(len(counted), policy)
    if now < last_end + wait:
        return Decision(
            "wait",
            f"{len(counted)} failure(s) in a row; backing off {wait:.0f}s before restarting"
            f" (retries never stop; cap {policy.max_backoff_seconds:.0f}s)",
            next_attempt_ts=last_end + wait,
            extra=extra,
            **context,
        )
    return Decision(
        "launch",
        f"restarting after {len(counted)} failure(s) in a row (backoff {wait:.0f}s elapsed)",
        extra=extra,
        **context,
    )
