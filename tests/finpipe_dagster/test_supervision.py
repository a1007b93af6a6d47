"""The supervisor's rules on plain values (no Dagster instance)."""

from finpipe import exit_codes
from finpipe_dagster.streams.policy import (
    Heartbeat,
    Policy,
    ProcessView,
    RunView,
    backoff_seconds,
    decide,
)
from finpipe_dagster.streams.resources import last_error

POLICY = Policy(
    stale_heartbeat_seconds=60,
    startup_grace_seconds=200,
    base_backoff_seconds=10,
    max_backoff_seconds=100,
    stable_run_seconds=300,
    alert_after_failures=3,
    kill_grace_seconds=5,
)
NOW = 1_000_000.0


def failed(n: int, ended: float, lived: float = 5.0, code: int = 1, error: str = "") -> RunView:
    return RunView(
        f"f{n}",
        "FAILURE",
        create_ts=ended - lived - n,
        start_ts=ended - lived,
        end_ts=ended,
        exit_code=code,
        last_error=error or None,
    )


def beat(ts: float, run_id: str | None = None) -> Heartbeat:
    return Heartbeat(ts=ts, run_id=run_id, pid=123)


def process(run_id: str, state: str) -> ProcessView:
    return ProcessView(run_id, 123, state, "pid 123 on host h", "h:123:9")  # type: ignore[arg-type]


def test_no_run_launches() -> None:
    assert decide([], None, NOW, POLICY).action == "launch"


def test_live_run_with_fresh_heartbeat_is_left_alone() -> None:
    run = RunView("a", "STARTED", create_ts=NOW - 500, start_ts=NOW - 490)
    decision = decide([run], beat(NOW - 5), NOW, POLICY)
    assert (decision.action, decision.terminate) == ("skip", ())


def test_queued_or_starting_run_is_never_doubled() -> None:
    for status in ("QUEUED", "STARTING", "NOT_STARTED", "CANCELING"):
        run = RunView("a", status, create_ts=NOW - 5000)
        assert decide([run], None, NOW, POLICY).action == "skip"


def test_stale_heartbeat_replaces_the_run() -> None:
    run = RunView("a", "STARTED", create_ts=NOW - 500, start_ts=NOW - 490)
    decision = decide([run], beat(NOW - 61), NOW, POLICY)
    assert decision.action == "replace"
    assert decision.terminate == ("a",)
    assert "61s" in decision.reason


def test_heartbeat_older_than_the_run_gets_startup_grace() -> None:
    run = RunView("a", "STARTED", create_ts=NOW - 150, start_ts=NOW - 150)
    # the heartbeat file is from a previous run: the new run has 200 s to report
    assert decide([run], beat(NOW - 3000), NOW, POLICY).action == "skip"
    late = RunView("a", "STARTED", create_ts=NOW - 250, start_ts=NOW - 250)
    assert decide([late], None, NOW, POLICY).action == "replace"


def test_a_run_still_starting_gets_the_startup_grace_not_the_stale_limit() -> None:
    """A stream whose start is slow (a JVM on a loaded machine) said "starting" once: it is
    judged by the startup grace from its run's start, then replaced like any other."""
    starting = Heartbeat(ts=NOW - 149, run_id="a", pid=123, starting=True)
    run = RunView("a", "STARTED", create_ts=NOW - 150, start_ts=NOW - 150)
    assert decide([run], starting, NOW, POLICY).action == "skip"  # 149 s > stale limit 60 s
    late = RunView("a", "STARTED", create_ts=NOW - 250, start_ts=NOW - 250)
    beat_late = Heartbeat(ts=NOW - 249, run_id="a", pid=123, starting=True)
    decision = decide([late], beat_late, NOW, POLICY)
    assert decision.action == "replace" and "still starting" in decision.reason


def test_second_live_copy_is_terminated() -> None:
    first = RunView("a", "STARTED", create_ts=NOW - 100, start_ts=NOW - 90)
    second = RunView("b", "QUEUED", create_ts=NOW - 10)
    decision = decide([second, first], beat(NOW - 1), NOW, POLICY)
    assert decision.action == "skip"
    assert decision.terminate == ("b",)


def test_backoff_grows_and_is_capped() -> None:
    assert [backoff_seconds(n, POLICY) for n in range(6)] == [0, 10, 20, 40, 80, 100]
    assert backoff_seconds(10_000, POLICY) == 100  # no overflow after days of failures


def test_failed_run_waits_for_backoff_then_launches() -> None:
    runs = [failed(1, NOW - 15), failed(2, NOW - 100)]
    waiting = decide(runs, None, NOW, POLICY)  # 2 failures: 20 s backoff, 15 s elapsed
    assert waiting.action == "wait"
    assert waiting.failures_in_row == 2
    assert waiting.next_attempt_ts == NOW + 5
    assert decide(runs, None, NOW + 6, POLICY).action == "launch"


def test_long_lived_run_ends_the_failure_streak() -> None:
    runs = [failed(1, NOW - 15), failed(2, NOW - 1000, lived=400), failed(3, NOW - 2000)]
    assert decide(runs, None, NOW, POLICY).failures_in_row == 2


def test_clean_end_resets_the_streak_and_cancel_by_user_restarts() -> None:
    ok = RunView("ok", "CANCELED", create_ts=NOW - 50, start_ts=NOW - 40, end_ts=NOW - 1)
    assert decide([ok, failed(2, NOW - 100)], None, NOW, POLICY).action == "launch"


def test_supervisor_termination_counts_as_failure() -> None:
    replaced = RunView(
        "r",
        "CANCELED",
        create_ts=NOW - 50,
        start_ts=NOW - 40,
        end_ts=NOW - 1,
        terminated_by_supervisor=True,
    )
    assert decide([replaced], None, NOW, POLICY).action == "wait"


def test_transient_failures_are_retried_for_ever_and_alert_after_n() -> None:
    runs = [failed(i, NOW - 1000 * i, error="Kafka not reachable") for i in range(1, 41)]
    decision = decide(runs, None, NOW + 10_000, POLICY)
    assert decision.action == "launch"
    assert decision.failures_in_row == 40
    assert decision.incident == "keeps_failing"
    assert decision.last_error == "Kafka not reachable"
    assert decide(runs[:2], None, NOW + 10_000, POLICY).incident is None  # 2 < 3


def test_a_fresh_heartbeat_of_a_young_run_is_not_yet_healthy() -> None:
    runs = [failed(i, NOW - 100 * i) for i in range(1, 4)]
    young = RunView("a", "STARTED", create_ts=NOW - 50, start_ts=NOW - 50)
    decision = decide([young, *runs], beat(NOW - 1, "a"), NOW, POLICY)
    assert (decision.action, decision.healthy, decision.incident) == (
        "skip",
        False,
        "keeps_failing",
    )
    old = RunView("a", "STARTED", create_ts=NOW - 400, start_ts=NOW - 400)
    decision = decide([old, *runs], beat(NOW - 1, "a"), NOW, POLICY)
    assert (decision.healthy, decision.incident) == (True, None)


def progressing(ts: float, progress_ts: float | None, run_id: str = "a") -> Heartbeat:
    """A heartbeat of a stream that reports progress (Spark), last at ``progress_ts``."""
    return Heartbeat(ts=ts, run_id=run_id, pid=123, reports_progress=True, progress_ts=progress_ts)


def test_a_run_alive_but_not_progressing_is_never_healthy() -> None:
    """A Spark query that cannot reach Kafka keeps its process and a fresh heartbeat for
    minutes before it fails: the incident stays open all that time, and closes only once
    the stream has progressed for the stable time."""
    runs = [failed(i, NOW - 400 - 100 * i) for i in range(1, 4)]
    stuck = RunView("a", "STARTED", create_ts=NOW - 400, start_ts=NOW - 400)
    for progress_ts in (None, NOW - 390, NOW - 61):  # never; long ago; just past the limit
        decision = decide([stuck, *runs], progressing(NOW - 1, progress_ts), NOW, POLICY)
        assert (decision.action, decision.healthy, decision.incident) == (
            "skip",
            False,
            "keeps_failing",
        ), progress_ts
    assert (
        "no progress reported yet"
        in decide([stuck, *runs], progressing(NOW - 1, None), NOW, POLICY).reason
    )
    assert (
        "last progress 390s ago"
        in decide([stuck, *runs], progressing(NOW - 1, NOW - 390), NOW, POLICY).reason
    )
    # Progressing, but not yet for the stable time since its start: still open.
    young = RunView("a", "STARTED", create_ts=NOW - 250, start_ts=NOW - 250)
    assert decide([young, *runs], progressing(NOW - 1, NOW - 2), NOW, POLICY).incident
    healthy = decide([stuck, *runs], progressing(NOW - 1, NOW - 2), NOW, POLICY)
    assert (healthy.healthy, healthy.incident) == (True, None)


def test_a_long_run_that_never_progressed_does_not_end_the_streak() -> None:
    """Lived 400 s (more than the stable time) but progressed only for its first 10 s:
    it counts in the streak and does not end it, so the alert threshold is still met."""

    def lived_400s(progressed_until: float) -> RunView:
        return RunView(
            "s",
            "FAILURE",
            create_ts=NOW - 1000,
            start_ts=NOW - 1000,
            end_ts=NOW - 600,
            exit_code=1,
            progressed_until=progressed_until,
        )

    stuck = lived_400s(NOW - 990)
    runs = [failed(1, NOW - 15), stuck, failed(3, NOW - 2000)]
    decision = decide(runs, None, NOW, POLICY)
    assert (decision.failures_in_row, decision.incident) == (3, "keeps_failing")
    was_healthy = lived_400s(NOW - 610)
    assert decide([runs[0], was_healthy, runs[2]], None, NOW, POLICY).failures_in_row == 2


def test_every_decision_but_a_healthy_run_keeps_the_incident_open() -> None:
    """Waiting for an old process or replacing a stuck run is no recovery: an incident that
    closed for one such tick would reopen on the next, two alerts for one incident."""
    runs = [failed(i, NOW - 100 * i) for i in range(1, 4)]
    lingering = decide(runs, None, NOW, POLICY, [process("f1", "alive")])
    assert (lingering.action, lingering.incident) == ("stop_old", "keeps_failing")
    unknown = decide(runs, None, NOW, POLICY, [process("f1", "unknown")])
    assert (unknown.action, unknown.incident) == ("wait_old", "keeps_failing")
    stale = RunView("a", "STARTED", create_ts=NOW - 50, start_ts=NOW - 50)
    for state in ("alive", "gone"):
        decision = decide(
            [stale, *runs], beat(NOW - 3000, "a"), NOW + 500, POLICY, [process("a", state)]
        )
        assert decision.action in {"stop_old", "replace"}
        assert decision.incident == "keeps_failing", decision


def test_a_heartbeat_of_another_run_never_counts_for_this_one() -> None:
    run = RunView("new", "STARTED", create_ts=NOW - 250, start_ts=NOW - 250)
    # fresh, but written by an old process of run "old": the new run never reported
    decision = decide([run], beat(NOW - 1, "old"), NOW, POLICY)
    assert decision.action == "replace"
    assert "start without heartbeat" in decision.reason


def test_no_retry_stops_at_once_and_names_the_fix() -> None:
    error = "invalid finpipe settings: KAFKA_SERVER: 'kafka' is not host:port"
    runs = [failed(1, NOW - 10, code=exit_codes.NO_RETRY, error=error)]
    decision = decide(runs, None, NOW + 100_000, POLICY)
    assert decision.action == "stopped"
    assert "KAFKA_SERVER" in decision.reason and "off and on" in decision.reason
    assert decision.incident == "stopped"


def test_resume_after_no_retry_launches_at_once_and_keeps_the_incident_until_healthy() -> None:
    runs = [failed(i, NOW - 10 * i, code=exit_codes.NO_RETRY) for i in range(1, 6)]
    before = decide(runs, None, NOW, POLICY, resumed_at=NOW - 20)  # resumed before the last
    assert before.action == "stopped"
    resumed = decide(runs, None, NOW, POLICY, resumed_at=NOW - 5)
    assert resumed.action == "launch"
    assert resumed.extra == {"resumed_after": "f1"}
    assert resumed.incident == "stopped"  # still open: no run has been healthy yet
    again = [failed(0, NOW + 1, code=exit_codes.NO_RETRY), *runs]
    assert decide(again, None, NOW + 2, POLICY, resumed_at=NOW - 5).action == "stopped"


def test_a_resume_retries_a_transient_streak_at_once() -> None:
    runs = [failed(i, NOW - 10 * i) for i in range(1, 6)]  # backoff 100 s pending
    assert decide(runs, None, NOW, POLICY).action == "wait"
    assert decide(runs, None, NOW, POLICY, resumed_at=NOW - 1).action == "launch"


def test_stale_run_whose_process_lives_is_stopped_not_replaced() -> None:
    run = RunView("a", "STARTED", create_ts=NOW - 500, start_ts=NOW - 490)
    decision = decide([run], beat(NOW - 61, "a"), NOW, POLICY, [process("a", "alive")])
    assert decision.action == "stop_old"
    assert "waiting for old process" in decision.reason
    assert [p.run_id for p in decision.stop] == ["a"]
    assert decision.terminate == ("a",)
    gone = decide([run], beat(NOW - 61, "a"), NOW, POLICY, [process("a", "gone")])
    assert gone.action == "replace"


def test_a_canceling_run_whose_process_hangs_is_stopped_too() -> None:
    run = RunView("a", "CANCELING", create_ts=NOW - 500, start_ts=NOW - 490)
    decision = decide([run], beat(NOW - 61, "a"), NOW, POLICY, [process("a", "alive")])
    assert decision.action == "stop_old"
    assert decide([run], beat(NOW - 1, "a"), NOW, POLICY).action == "skip"


def test_a_process_that_cannot_be_checked_is_never_replaced() -> None:
    run = RunView("a", "STARTED", create_ts=NOW - 500, start_ts=NOW - 490)
    decision = decide([run], beat(NOW - 600, "a"), NOW, POLICY, [process("a", "unknown")])
    assert decision.action == "wait_old"
    assert decision.terminate == () and decision.stop == ()


def test_a_finished_run_whose_process_lives_blocks_any_launch() -> None:
    ended = RunView("a", "FAILURE", create_ts=NOW - 500, start_ts=NOW - 490, end_ts=NOW - 400)
    decision = decide([ended], None, NOW, POLICY, [process("a", "alive")])
    assert decision.action == "stop_old"
    assert decide([ended], None, NOW, POLICY, [process("a", "unknown")]).action == "wait_old"
    assert decide([ended], None, NOW, POLICY, [process("a", "gone")]).action == "launch"


def test_last_error_prefers_the_plain_text_a_stream_prints_for_a_fatal_fault() -> None:
    settings_error = [
        '{"level": "info", "event": "starting"}',
        "invalid finpipe settings:",
        "  KAFKA_SERVER: 'kafka' is not host:port; locally use localhost:9092",
    ]
    assert last_error(settings_error, None, 2) == (
        "invalid finpipe settings: KAFKA_SERVER: 'kafka' is not host:port; locally use "
        "localhost:9092"
    )
    logged = ["old text", '{"level": "error", "event": "spark_lake_unreachable", "error": "x"}']
    assert last_error(logged, None, 1) == "x"
    assert last_error([], {"error": "from heartbeat"}, 1) == "from heartbeat"
    assert last_error([], None, -9) == "exit code -9"


def test_last_error_skips_the_spark_jvms_own_log_lines() -> None:
    lines = [
        '{"level": "error", "event": "spark_query_failed", "error": "TimeoutException: t"}',
        "26/12/02 02:21:47 WARN NetworkClient: [Consumer clientId=c] Connection to node 1"
        " (localhost/127.0.0.1:19192) could not be established. Node may not be available.",
    ]
    assert last_error(lines, None, 1) == "TimeoutException: t"
