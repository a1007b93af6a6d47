"""`finpipe-infra`: the command behind `make up`, `make down`, `make status`, `make logs`."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from finpipe import lake_migration
from finpipe.settings import SettingsError, load_settings
from infra import artifacts, services, stack
from infra.artifacts import ProvisioningError, say
from infra.processes import ServiceError


def _print_status(settings) -> int:  # type: ignore[no-untyped-def]
    rows = stack.status_rows(settings)
    widths = {key: max(len(key), *(len(r[key]) for r in rows)) for key in rows[0]}
    header = "  ".join(key.upper().ljust(widths[key]) for key in rows[0])
    print(header)
    for row in rows:
        print("  ".join(row[key].ljust(widths[key]) for key in row))
    for stream, beat in stack.stream_counters(settings).items():
        shown = {k: v for k, v in beat.items() if k not in {"stream", "pid"}}
        print(f"\n{stream} counters: " + json.dumps(shown, default=str, sort_keys=True))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="finpipe-infra", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    prov = sub.add_parser("provision", help="fetch/build Kafka, MinIO and Spark's jars (cached)")
    prov.add_argument("--browser", action="store_true", help="also install Chromium for tests")
    prov.add_argument(
        "--compose",
        action="store_true",
        help="also build Docker Compose, which the tests use to validate docker-compose.yml",
    )
    prov.add_argument(
        "--delta-spark",
        action="store_true",
        help="also fetch Delta Lake's Spark reader, which the tests read the lake with",
    )
    prov.add_argument(
        "--prometheus",
        action="store_true",
        help="also fetch Prometheus and promtool (the tests' drill and rules check use them)",
    )
    prov.add_argument(
        "--only",
        choices=sorted(stack.PROVISIONERS),
        action="append",
        help="provision only these components (repeatable), e.g. --only spark in images",
    )
    sub.add_parser("up", help="start the platform on loopback")
    sub.add_parser("down", help="stop everything `up` started")
    sub.add_parser("status", help="show what runs and where")
    sub.add_parser(
        "migrate-lake",
        help="convert a lake of the pre-Delta layout into Delta tables (platform down)",
    )
    sub.add_parser(
        "spark-jars", help="provision Spark's connector jars and print their folder (SPARK_JARS)"
    )
    logs = sub.add_parser("logs", help="follow the log files")
    logs.add_argument("names", nargs="*", help="components (default: all)")
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
        if args.command == "provision":
            stack.provision(
                settings,
                browser=args.browser,
                compose=args.compose,
                delta_spark=args.delta_spark,
                prometheus=args.prometheus,
                only=args.only,
            )
        elif args.command == "up":
            stack.up(settings)
            _print_status(settings)
        elif args.command == "down":
            stopped = stack.down(settings)
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        elif args.command == "status":
            return _print_status(settings)
        elif args.command == "migrate-lake":
            services.start_infrastructure(settings)
            lake_migration.migrate(settings, say=say)
        elif args.command == "spark-jars":
            stack.provision(settings, only=["spark"])
            print(artifacts.spark_jars_folder(settings.cache_dir))
        elif args.command == "logs":
            files = [
                row["log"]
                for row in stack.status_rows(settings)
                if row["log"] != "-" and (not args.names or row["name"] in args.names)
            ]
            return subprocess.call(["tail", "-n", "50", "-F", *files])
    except (SettingsError, ProvisioningError, ServiceError, lake_migration.MigrationError) as exc:
        print(f"finpipe: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
