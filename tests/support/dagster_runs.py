"""Dagster runs executed at the same moment, each in a process of its own, as the
daemon's run launcher starts them.

Not threads of the test process: Dagster configures Python's logging for every run
(``logging.config.dictConfig`` takes the logging module's lock, then each handler's),
while the other run's thread logs (a handler's lock, then the module's): two runs in
threads of one process can deadlock for good.
"""

from __future__ import annotations

import multiprocessing
import queue
from multiprocessing.synchronize import Barrier

from dagster import DagsterInstance, execute_job
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.instance.ref import InstanceRef


def _execute(
    ref: InstanceRef, module: str, attribute: str, job_name: str, start: Barrier, out: object
) -> None:
    try:
        repository = ReconstructableRepository.for_module(module, attribute)
        job = repository.get_reconstructable_job(job_name)
        with DagsterInstance.from_ref(ref) as instance:
            start.wait(timeout=300)
            result = execute_job(job, instance)
            out.put((result.run_id, result.success, ""))  # type: ignore[attr-defined]
    except BaseException as exc:  # the parent reports it instead of waiting it out
        out.put(("", False, f"{type(exc).__name__}: {exc}"))  # type: ignore[attr-defined]
        raise


def execute_at_once(
    instance: DagsterInstance,
    job_name: str,
    copies: int = 2,
    *,
    module: str = "finpipe_dagster.definitions",
    attribute: str = "defs",
    timeout: float = 600,
) -> list[tuple[str, bool]]:
    """Runs ``copies`` runs of ``job_name`` released together; their (run id, success).
    The processes inherit the test's environment (its settings)."""
    ref = instance.get_ref()
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(copies)
    out = context.Queue()
    processes = [
        context.Process(target=_execute, args=(ref, module, attribute, job_name, start, out))
        for _ in range(copies)
    ]
    for process in processes:
        process.start()
    results: list[tuple[str, bool]] = []
    try:
        for _ in range(copies):
            run_id, success, error = out.get(timeout=timeout)
            assert not error, f"a run of {job_name} could not be executed: {error}"
            results.append((run_id, success))
    except queue.Empty:
        raise AssertionError(
            f"{len(results)} of {copies} runs of {job_name} ended within {timeout:.0f} s; "
            f"exit codes {[p.exitcode for p in processes]}"
        ) from None
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
    return results
