"""What a supervisor does about one stream: a pure function of runs, heartbeat and time.

Kept free of Dagster's instance so every rule is unit-tested on plain values; the sensor
in ``sensors.py`` gathers the inputs and carries out the decision.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from finpipe_dagster.instance import LIVE_RUN_STATUSES

TERMINATED_BY_TAG = "finpipe/terminated_by"
SUPERVISOR = "supervisor"

Action = Literal["launch", "skip", "wait", "replace", "give_up"]


@dataclass(frozen=True)
class RunView:
    run_id: str
    status: str  # DagsterRunStatus.value
    create_ts: float
    start_ts: float | None = None
    end_ts: float | None = None
    terminated_by_supervisor: bool = False

    @property
    def is_live(self) -> bool:
        return self.status in LIVE_RUN_STATUSES


@dataclass(frozen=True)
class Policy:
    stale_heartbeat_seconds: float = 120.0
    startup_grace_seconds: float = 240.0
    base_backoff_seconds: float = 5.0
    max_backoff_seconds: float = 600.0
    stable_run_seconds: float = 300.0
    give_up_after_failures: int = 8


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    terminate: tuple[str, ...] = ()
    failures_in_row: int = 0
    next_attempt_ts: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_cursor(self, stream: str, now: float) -> dict[str, Any]:
        return {"stream": stream, "at": now, **asdict(self)}


def _is_failure(run: RunView) -> bool:
    return run.status == "FAILURE" or (run.status == "CANCELED" and run.terminated_by_supervisor)


def failures_in_row(runs: list[RunView], policy: Policy) -> int:
    """Failed runs since the last clean end, newest first; a long-lived run ends the streak."""
    streak = 0
    for run in sorted((r for r in runs if not r.is_live), key=lambda r: r.create_ts, reverse=True):
        if not _is_failure(run):
            break
        streak += 1
        lived = (run.end_ts or 0) - (run.start_ts or run.end_ts or 0)
        if lived >= policy.stable_run_seconds:
            break
    return streak


def backoff_seconds(streak: int, policy: Policy) -> float:
    if streak <= 0:
        return 0.0
    return min(policy.base_backoff_seconds * 2 ** (streak - 1), policy.max_backoff_seconds)


def decide(runs: list[RunView], heartbeat_ts: float | None, now: float, policy: Policy) -> Decision:
    """One supervisor tick. ``runs`` are the stream's recent runs in any order."""
    live = sorted((r for r in runs if r.is_live), key=lambda r: r.create_ts)
    if live:
        return _decide_live(live, heartbeat_ts, now, policy)

    streak = failures_in_row(runs, policy)
    if not runs:
        return Decision("launch", "no run of this stream exists yet")
    if streak == 0:
        last = max(runs, key=lambda r: r.create_ts)
        return Decision("launch", f"last run {last.run_id} ended {last.status}; restarting")
    if streak >= policy.give_up_after_failures:
        return Decision(
            "give_up",
            f"{streak} failures in a row (limit {policy.give_up_after_failures}): not restarting;"
            " fix the cause, then launch the job by hand or reset the sensor",
            failures_in_row=streak,
        )
    last_end = max((r.end_ts or r.create_ts) for r in runs)
    wait = backoff_seconds(streak, policy)
    if now < last_end + wait:
        return Decision(
            "wait",
            f"{streak} failure(s) in a row; backing off {wait:.0f}s before restarting",
            failures_in_row=streak,
            next_attempt_ts=last_end + wait,
        )
    return Decision(
        "launch",
        f"restarting after {streak} failure(s) in a row (backoff {wait:.0f}s elapsed)",
        failures_in_row=streak,
    )


def _decide_live(
    live: list[RunView], heartbeat_ts: float | None, now: float, policy: Policy
) -> Decision:
    started = [r for r in live if r.status == "STARTED"]
    keep = started[0] if started else live[0]
    extras = tuple(r.run_id for r in live if r is not keep)
    if keep.status == "STARTED":
        began = keep.start_ts or keep.create_ts
        if heartbeat_ts is not None and heartbeat_ts >= began:
            age, limit, what = now - heartbeat_ts, policy.stale_heartbeat_seconds, "last heartbeat"
        else:
            age, limit, what = now - began, policy.startup_grace_seconds, "start without heartbeat"
        if age > limit:
            return Decision(
                "replace",
                f"run {keep.run_id} is STARTED but its {what} was {age:.0f}s ago "
                f"(limit {limit:.0f}s): terminating and replacing it",
                terminate=(keep.run_id, *extras),
                extra={"heartbeat_age_seconds": round(age, 1)},
            )
    if extras:
        return Decision(
            "skip",
            f"run {keep.run_id} is {keep.status}; terminating extra copies {list(extras)}",
            terminate=extras,
        )
    return Decision("skip", f"run {keep.run_id} is {keep.status}")
