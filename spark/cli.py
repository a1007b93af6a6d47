"""``finpipe-spark``: run the streaming query until SIGTERM/SIGINT, then exit 0.

Settings come from the environment (``load_settings``): KAFKA_SERVER, KAFKA_TOPIC, S3_*,
LAKE_PREFIX, SPARK_MASTER, SPARK_TRIGGER_SECONDS, SPARK_CHECKPOINT_DIR,
SPARK_DRIVER_MEMORY, SPARK_SHUFFLE_PARTITIONS, SPARK_JARS, SPARK_UI_PORT,
S3_WRITE_RETRY_SECONDS, TRADE_FUTURE_TOLERANCE_SECONDS. Exit codes: 0 after a requested
stop, 1 when the query failed (or the object store is unreachable at start), 2 for
invalid settings or a checkpoint that is behind the lake (new, lost or restored from an
older copy).
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

import structlog

from finpipe import exit_codes
from finpipe.logs import configure_logging
from finpipe.settings import SettingsError, load_settings
from spark.job import StreamingJob


def main() -> None:
    configure_logging()
    log = structlog.get_logger("spark")
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        sys.exit(exit_codes.NO_RETRY)
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        if not stop.is_set():
            log.info("spark_stop_requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    sys.exit(StreamingJob(settings, stop).run())


if __name__ == "__main__":
    main()
