"""The simulator's WebSocket server (websockets, asyncio).

Each connection gets a :class:`~producer.simulator.protocol.Session` and a feed task
that sends synthetic trade frames every tick (or the replay's frames), plus a ping about
once a minute. Faults are injected from any thread with :meth:`SimulatorServer.inject`.
A replay has one cursor for the whole server: a reconnecting client continues where
the dropped one stopped, as a live feed would, instead of receiving the session twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from producer.simulator import faults, protocol, replay
from producer.simulator.market import Market

log = structlog.get_logger("simulator")


@dataclass
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    """When set, handshakes without ``?token=<this>`` get HTTP 401, like Finnhub's."""
    replay_file: Path | None = None
    speed: float = 1.0
    loop_replay: bool = False
    tick_seconds: float = 0.2
    trades_per_second: float = 10.0
    burst_probability: float = 0.002
    burst_multiplier: float = 10.0
    ignore_market_hours: bool = True
    ping_seconds: float = 60.0
    seed: int | None = None
    fault_every_seconds: float = 0.0
    """Inject a random fault this often (0: never); the kinds are ``fault_kinds``."""
    fault_kinds: tuple[faults.FaultKind, ...] = faults.FAULT_KINDS
    stall_seconds: float = 10.0


@dataclass
class SimulatorStats:
    connections: int = 0
    rejected_handshakes: int = 0
    frames_sent: int = 0
    trades_sent: int = 0
    faults: dict[str, int] = field(default_factory=dict)


class SimulatorServer:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.stats = SimulatorStats()
        self.port = config.port
        self._frames = replay.load_frames(config.replay_file) if config.replay_file else None
        self._replay_cursor = 0
        self._connections: set[ServerConnection] = set()
        self._stall_until = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._seeds = random.Random(config.seed)

    # --- running --------------------------------------------------------------------

    async def serve_forever(self, stop: asyncio.Event | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        stop = stop or asyncio.Event()
        self._stop = stop
        async with serve(
            self._handle,
            self.config.host,
            self.config.port,
            process_request=self._check_token,
            compression=None,
            max_size=2**20,
            ping_interval=None,
        ) as server:
            self._server = server
            self.port = next(iter(server.sockets)).getsockname()[1]
            log.info(
                "simulator listening",
                url=f"ws://{self.config.host}:{self.port}",
                replay=str(self.config.replay_file) if self.config.replay_file else None,
                token_required=self.config.token is not None,
            )
            self._ready.set()
            chaos = (
                asyncio.create_task(self._random_faults())
                if self.config.fault_every_seconds > 0
                else None
            )
            await stop.wait()
            if chaos:
                chaos.cancel()

    def start_in_thread(self) -> SimulatorServer:
        """Serve from a daemon thread (tests, benchmarks); returns once listening."""

        def run() -> None:
            asyncio.run(self.serve_forever())

        self._thread = threading.Thread(target=run, name="simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"the simulator did not start on port {self.config.port}")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    @property
    def url(self) -> str:
        return f"ws://{self.config.host}:{self.port}"

    @property
    def replay_finished(self) -> bool:
        return self._frames is not None and self._replay_cursor >= len(self._frames)

    # --- faults ---------------------------------------------------------------------

    def inject(self, kind: faults.FaultKind, **options: Any) -> None:
        """Thread-safe: drop, stall (seconds=...), garbage, error (message=...)."""
        if self._loop is None:
            raise RuntimeError("the simulator is not running")
        future = asyncio.run_coroutine_threadsafe(self._inject(kind, **options), self._loop)
        future.result(10)

    async def _inject(self, kind: faults.FaultKind, **options: Any) -> None:
        self.stats.faults[kind] = self.stats.faults.get(kind, 0) + 1
        log.warning("injecting fault", kind=kind, connections=len(self._connections))
        if kind == "drop":
            for conn in list(self._connections):
                conn.transport.abort()
        elif kind == "stall":
            seconds = float(options.get("seconds", self.config.stall_seconds))
            self._stall_until = time.monotonic() + seconds
        elif kind == "garbage":
            now_ms = time.time_ns() // 1_000_000
            for conn in list(self._connections):
                for text in faults.garbage_frames(options.get("symbol", "AAPL"), now_ms):
                    await self._send(conn, text)
        elif kind == "error":
            message = str(options.get("message", "Simulated error"))
            for conn in list(self._connections):
                await self._send(conn, protocol.error_frame(message))
        else:
            raise ValueError(f"unknown fault {kind!r}; use one of {faults.FAULT_KINDS}")

    async def _random_faults(self) -> None:
        rng = random.Random(self.config.seed)
        while True:
            await asyncio.sleep(self.config.fault_every_seconds)
            await self._inject(rng.choice(self.config.fault_kinds))

    # --- connections ------------------------------------------------------------------

    def _check_token(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.config.token is None:
            return None
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query)
        if query.get("token", [None])[0] == self.config.token:
            return None
        self.stats.rejected_handshakes += 1
        log.warning("refused a handshake: missing or wrong token")
        return connection.respond(HTTPStatus.UNAUTHORIZED, "Invalid API key\n")

    async def _handle(self, conn: ServerConnection) -> None:
        self.stats.connections += 1
        self._connections.add(conn)
        session = protocol.Session()
        subscribed = asyncio.Event()
        feed = asyncio.create_task(self._feed(conn, session, subscribed))
        try:
            async for message in conn:
                for reply in session.handle(message):
                    await self._send(conn, reply)
                if session.ever_subscribed:
                    subscribed.set()
        except ConnectionClosed:
            pass
        finally:
            feed.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feed
            self._connections.discard(conn)

    async def _send(self, conn: ServerConnection, text: str, trades: int = 0) -> None:
        await conn.send(text)
        self.stats.frames_sent += 1
        self.stats.trades_sent += trades

    def _stalled(self) -> bool:
        return time.monotonic() < self._stall_until

    async def _feed(
        self, conn: ServerConnection, session: protocol.Session, subscribed: asyncio.Event
    ) -> None:
        pinger = asyncio.create_task(self._pings(conn))
        try:
            await subscribed.wait()
            if self._frames is not None:
                await self._replay(conn)
            else:
                await self._synthetic(conn, session)
            await asyncio.Future()  # a finished replay keeps the socket open (pings only)
        except ConnectionClosed:
            pass
        finally:
            pinger.cancel()

    async def _pings(self, conn: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            while True:
                await asyncio.sleep(self.config.ping_seconds)
                if not self._stalled():
                    await self._send(conn, protocol.ping_frame())

    async def _synthetic(self, conn: ServerConnection, session: protocol.Session) -> None:
        cfg = self.config
        market = Market(
            trades_per_second=cfg.trades_per_second,
            burst_probability=cfg.burst_probability,
            burst_multiplier=cfg.burst_multiplier,
            ignore_market_hours=cfg.ignore_market_hours,
            seed=self._seeds.randrange(2**32) if cfg.seed is not None else None,
        )
        last = time.monotonic()
        while True:
            await asyncio.sleep(cfg.tick_seconds)
            now = time.monotonic()
            elapsed, last = now - last, now
            if self._stalled() or not session.symbols:
                continue
            trades = market.tick(list(session.symbols), time.time_ns() // 1_000_000, elapsed)
            if trades:
                await self._send(conn, protocol.trade_frame(trades), len(trades))

    async def _replay(self, conn: ServerConnection) -> None:
        frames = self._frames
        assert frames is not None
        while True:
            started = time.monotonic()
            schedule = replay.paced(frames[self._replay_cursor :], self.config.speed)
            sent_since_yield = 0
            for due, text in schedule:
                delay = due - (time.monotonic() - started)
                if delay > 0:
                    await asyncio.sleep(delay)
                while self._stalled():
                    await asyncio.sleep(0.05)
                await self._send(conn, text)
                self._replay_cursor += 1
                sent_since_yield += 1
                if sent_since_yield >= 64:  # let other tasks (faults, pings) run at speed 0
                    sent_since_yield = 0
                    await asyncio.sleep(0)
            if not self.config.loop_replay:
                log.info("replay finished", frames=len(frames))
                return
            self._replay_cursor = 0
