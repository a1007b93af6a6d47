"""`finpipe-simulator`: a local Finnhub-protocol WebSocket feed (the platform's default).

Defaults come from the settings (SIMULATOR_HOST, SIMULATOR_PORT, FINPIPE_REPLAY_FILE,
FINPIPE_REPLAY_SPEED, SIMULATOR_IGNORE_MARKET_HOURS, SIMULATOR_TOKEN); flags override them.
``--replay`` takes a JSON-lines file of raw frames, a producer log segment, or a producer
log directory; ``--export-jsonl OUT`` writes the replay's frames as JSON lines and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from finpipe.logs import configure_logging
from finpipe.settings import SettingsError, load_settings
from producer.simulator import replay
from producer.simulator.faults import FAULT_KINDS
from producer.simulator.server import SimulatorConfig, SimulatorServer


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="finpipe-simulator", description=__doc__)
    p.add_argument("--host", help="interface to listen on (default SIMULATOR_HOST)")
    p.add_argument("--port", type=int, help="port (default SIMULATOR_PORT, 8765)")
    p.add_argument(
        "--replay",
        type=Path,
        metavar="FILE",
        help="JSON-lines file of raw frames, a producer log segment, or a producer log directory",
    )
    p.add_argument(
        "--speed", type=float, help="replay speed factor; 0 = max (default FINPIPE_REPLAY_SPEED)"
    )
    p.add_argument(
        "--export-jsonl",
        type=Path,
        metavar="OUT",
        help="write the --replay source's frames to OUT as JSON lines and exit",
    )
    p.add_argument("--loop", action="store_true", help="restart the replay when it ends")
    p.add_argument("--rate", type=float, default=10.0, help="mean trades/s per symbol")
    p.add_argument("--tick", type=float, default=0.2, help="seconds between trade frames")
    p.add_argument("--burst-probability", type=float, default=0.002, help="per symbol per tick")
    p.add_argument("--burst-multiplier", type=float, default=10.0, help="rate factor in bursts")
    hours = p.add_mutually_exclusive_group()
    hours.add_argument("--ignore-market-hours", dest="hours", action="store_const", const=True)
    hours.add_argument("--market-hours", dest="hours", action="store_const", const=False)
    p.add_argument("--ping-seconds", type=float, default=60.0, help="seconds between pings")
    p.add_argument("--seed", type=int, help="random seed for reproducible data")
    p.add_argument("--fault-every", type=float, default=0.0, help="inject a fault every N s")
    p.add_argument(
        "--faults",
        default=",".join(FAULT_KINDS),
        help=f"comma-separated kinds for --fault-every ({','.join(FAULT_KINDS)})",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    kinds = tuple(k.strip() for k in args.faults.split(",") if k.strip())
    unknown = set(kinds) - set(FAULT_KINDS)
    if unknown:
        print(f"--faults: unknown kinds {sorted(unknown)}; use {FAULT_KINDS}", file=sys.stderr)
        return 2
    if args.export_jsonl is not None:
        return _export(args.replay or settings.replay_file, args.export_jsonl)
    token = settings.simulator_token.get_secret_value() if settings.simulator_token else None
    config = SimulatorConfig(
        host=args.host or settings.simulator_host,
        port=args.port or settings.simulator_port,
        token=token,
        replay_file=args.replay or settings.replay_file,
        speed=settings.replay_speed if args.speed is None else args.speed,
        loop_replay=args.loop,
        tick_seconds=args.tick,
        trades_per_second=args.rate,
        burst_probability=args.burst_probability,
        burst_multiplier=args.burst_multiplier,
        ignore_market_hours=(
            settings.simulator_ignore_market_hours if args.hours is None else args.hours
        ),
        ping_seconds=args.ping_seconds,
        seed=args.seed,
        fault_every_seconds=args.fault_every,
        fault_kinds=kinds,  # type: ignore[arg-type]
    )
    try:
        server = SimulatorServer(config)
    except FileNotFoundError as exc:
        print(f"finpipe-simulator: {exc}", file=sys.stderr)
        return 2
    asyncio.run(_serve(server))
    return 0


def _export(source: Path | None, out: Path) -> int:
    if source is None:
        print("--export-jsonl needs --replay (or FINPIPE_REPLAY_FILE)", file=sys.stderr)
        return 2
    try:
        frames = replay.load_frames(source)
    except FileNotFoundError as exc:
        print(f"finpipe-simulator: {exc}", file=sys.stderr)
        return 2
    with out.open("w", encoding="utf-8", errors="surrogateescape") as handle:
        for text in frames:
            handle.write(text.replace("\n", " ") + "\n")
    print(f"wrote {len(frames)} frames to {out}")
    return 0


async def _serve(server: SimulatorServer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.serve_forever(stop)


if __name__ == "__main__":
    sys.exit(main())
