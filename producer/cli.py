"""`finpipe-producer`: run the producer until SIGTERM/SIGINT (settings from env and .env).

Exit codes: 0 after a clean stop (what Kafka has not confirmed yet stays in the receive
log and the next start delivers it); 1 when the delivery loop failed; 2 for a problem no
retry fixes (bad token, bad settings, an unusable PRODUCER_LOG_DIR). An unreachable
Kafka is never fatal: the producer keeps receiving into its log.
"""

from __future__ import annotations

import signal
import sys

import structlog

from finpipe import exit_codes
from finpipe.health import StreamReporter
from finpipe.logs import configure_logging
from finpipe.settings import SettingsError, load_settings
from producer.app import TradeProducer
from producer.errors import FatalError
from producer.metrics import ProducerMetrics


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    log = structlog.get_logger("producer")
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return exit_codes.NO_RETRY
    try:
        with StreamReporter(settings, "producer") as reporter:
            producer = TradeProducer(settings, reporter)

            def _stop(signum: int, _frame: object) -> None:
                log.info("stop requested", signal=signal.Signals(signum).name)
                producer.stop()

            signal.signal(signal.SIGTERM, _stop)
            signal.signal(signal.SIGINT, _stop)
            if not settings.producer_metrics_port:
                return producer.run()
            with ProducerMetrics(producer):
                return producer.run()
    except FatalError as exc:
        log.error("producer cannot run", error=str(exc))
        print(f"finpipe-producer: {exc}", file=sys.stderr)
        return exit_codes.NO_RETRY


if __name__ == "__main__":
    sys.exit(main())
