"""Replay of a recorded session: a JSON-lines file, one raw frame's text per line.

Pacing comes from the frames themselves: a trade frame is due at its latest trade time,
relative to the first one, divided by the speed factor; other frames (pings, errors,
garbage) go out right after the frame before them. Speed 0 means as fast as possible.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec

from finpipe.contracts import TradeFrame

_TRADE_FRAME = msgspec.json.Decoder(TradeFrame)


def load_frames(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(
            f"replay file {path} does not exist (FINPIPE_REPLAY_FILE / --replay): "
            "give a JSON-lines file with one raw Finnhub frame per line"
        )
    with path.open(encoding="utf-8", errors="surrogateescape") as handle:
        return [line.rstrip("\r\n") for line in handle if line.strip()]


def frame_time_ms(text: str) -> int | None:
    """The latest trade time of a trade frame, or None for any other line."""
    try:
        frame = _TRADE_FRAME.decode(text)
    except (msgspec.DecodeError, UnicodeEncodeError):
        return None
    return max((trade.t for trade in frame.data), default=None)


def paced(frames: list[str], speed: float) -> Iterator[tuple[float, str]]:
    """(seconds since the replay started when the frame is due, frame text)."""
    first: int | None = None
    due = 0.0
    for text in frames:
        if speed > 0:
            stamp = frame_time_ms(text)
            if stamp is not None:
                if first is None:
                    first = stamp
                due = max(due, (stamp - first) / 1000 / speed)
        yield due, text
