"""The supervisor's rules on plain values (no Dagster instance)."""

from finpipe_dagster.streams.policy import Policy, RunView, backoff_seconds, decide

POLICY = Policy(
    stale_heartbeat_seconds=60,
    startup_grace_seconds=200,
    base_backoff_seconds=10,
    max_backoff_seconds=100,
    stable_run_seconds=300,
    give_up_after_failures=4,
)
NOW = 1_000_000.0


def failed(n: int, ended: float, lived: float = 5.0) -> RunView:
    return RunView(
        f"f{n}", "FAILURE", create_ts=ended - lived - n, start_ts=ended - lived, end_ts=ended
    )


def test_no_run_launches() -> None:
    assert decide([], None, NOW, POLICY).action == "launch"


def test_live_run_with_fresh_heartbeat_is_left_alone() -> None:
    run = RunView("a", "STARTED", create_ts=NOW - 500, start_ts=NOW - 490)
    decision = decide([run], NOW - 5, NOW, POLICY)
    assert (decision.action, decision.terminate) == ("skip", ())


def test_queued_or_starting_run_is_never_doubled() -> None:
    for status in ("QUEUED", "STARTING", "NOT_STARTED", "CANCELING"):
        run = RunView("a", status, create_ts=NOW - 5000)
        assert decide([run], None, NOW, POLICY).action == "skip"


def test_stale_heartbeat_replaces_the_run() -> None:
    run = RunView("a", "STARTED", create_ts=NOW - 500, start_ts=NOW - 490)
    decision = decide([run], NOW - 61, NOW, POLICY)
    assert decision.action == "replace"
    assert decision.terminate == ("a",)
    assert "61s" in decision.reason


def test_heartbeat_older_than_the_run_gets_startup_grace() -> None:
    run = RunView("a", "STARTED", create_ts=NOW - 150, start_ts=NOW - 150)
    # the heartbeat file is from a previous run: the new run has 200 s to report
    assert decide([run], NOW - 3000, NOW, POLICY).action == "skip"
    late = RunView("a", "STARTED", create_ts=NOW - 250, start_ts=NOW - 250)
    assert decide([late], None, NOW, POLICY).action == "replace"


def test_second_live_copy_is_terminated() -> None:
    first = RunView("a", "STARTED", create_ts=NOW - 100, start_ts=NOW - 90)
    second = RunView("b", "QUEUED", create_ts=NOW - 10)
    decision = decide([second, first], NOW - 1, NOW, POLICY)
    assert decision.action == "skip"
    assert decision.terminate == ("b",)


def test_backoff_grows_and_is_capped() -> None:
    assert [backoff_seconds(n, POLICY) for n in range(6)] == [0, 10, 20, 40, 80, 100]


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


def test_gives_up_after_too_many_failures() -> None:
    runs = [failed(i, NOW - 1000 * i) for i in range(1, 5)]
    decision = decide(runs, None, NOW + 10_000, POLICY)
    assert decision.action == "give_up"
    assert "4 failures in a row" in decision.reason
