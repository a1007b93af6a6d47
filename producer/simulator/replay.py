"""Replay of a recorded session: a JSON-lines file, one raw frame's text per line, or the
producer's receive log (a segment file, or the log directory for all its segments), so
a captured feed replays through the same code path as the live one.

Pacing comes from the frames themselves: a trade frame is due at its latest trade time,
relative to the first one, divided by the speed factor; other frames (pings, errors,
garbage) go out right after the frame before them. Speed 0 means as fast as possible.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec

from finpipe.contracts import TradeFrame
from producer.journal import SEGMENT_MAGIC, list_segments, read_segment_records

_TRADE_FRAME = msgspec.json.Decoder(TradeFrame)


def _is_segment(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(len(SEGMENT_MAGIC)) == SEGMENT_MAGIC


def _text(payload: bytes) -> str:
    return payload.decode("utf-8", errors="surrogateescape")


def load_frames(path: Path) -> list[str]:
    if path.is_dir() and list_segments(path):
        return [
            _text(r.payload) for seg in list_segments(path) for r in read_segment_records(seg.path)
        ]
    if path.is_file() and _is_segment(path):
        return [_text(r.payload) for r in read_segment_records(path)]
    if not path.is_file():
        raise FileNotFoundError(
            f"replay file {path} does not exist (FINPIPE_REPLAY_FILE / --replay): "
            "give a JSON-lines file with one raw Finnhub frame per line, or a producer log "
            "segment (PRODUCER_LOG_DIR/seg-*.log) or that directory"
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
