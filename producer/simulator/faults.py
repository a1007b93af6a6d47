"""Fault injection for tests and drills: what a broken feed can send or do.

``drop`` closes every connection abruptly, ``stall`` sends nothing (not even pings) for
a while, ``garbage`` sends the malformed frames below, ``error`` sends an error frame.
"""

from __future__ import annotations

from typing import Literal

FaultKind = Literal["drop", "stall", "garbage", "error"]
FAULT_KINDS: tuple[FaultKind, ...] = ("drop", "stall", "garbage", "error")


def garbage_frames(symbol: str, now_ms: int) -> list[str]:
    """Malformed frames, each of which the producer must dead-letter exactly once.

    One per line of defence: not JSON, truncated JSON, not an object, an unknown type,
    a trade frame without a data list, and a trade frame whose single trade has wrong
    types (so it yields one dead-lettered trade rather than a dead-lettered frame).
    """
    whole = f'{{"type":"trade","data":[{{"p":1.5,"s":"{symbol}","t":{now_ms},"v":1}}]}}'
    return [
        "}{ this is not json",
        whole[: len(whole) // 2],
        "[1, 2, 3]",
        '{"type":"news","headline":"nothing"}',
        '{"type":"trade","data":null}',
        f'{{"type":"trade","data":[{{"p":"abc","s":"{symbol}","t":"{now_ms}","v":1}}]}}',
    ]
