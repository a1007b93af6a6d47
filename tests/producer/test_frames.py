"""Parsing and validation of every frame kind, the oddities of the real feed, and a
property: whatever arrives, the parser never raises and accounts for every item."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from finpipe.contracts import (
    DEFAULT_FUTURE_TOLERANCE_MS,
    DeadLetter,
    TradeRecord,
    log_position_prefix,
    parse_log_position,
)
from producer.frames import EPOCH_2000_MS, FrameProcessor, encode_dead_letter

NOW_MS = 1_764_000_000_000  # 2025-11-24
SYMBOLS = ("BINANCE:BTCUSDT", "AAPL")


@pytest.fixture
def processor() -> FrameProcessor:
    return FrameProcessor(SYMBOLS, "simulator")


def trade(**fields: object) -> dict[str, object]:
    return {"p": 100.5, "s": "AAPL", "t": NOW_MS - 1000, "v": 10, "c": ["1", "12"]} | fields


def frame(*trades: dict[str, object]) -> bytes:
    return msgspec.json.encode({"type": "trade", "data": list(trades)})


def records(result) -> list[tuple[str, TradeRecord]]:  # type: ignore[no-untyped-def]
    return [(k.decode(), msgspec.json.decode(v, type=TradeRecord)) for k, v in result.records]


def test_trade_frame_flattens_to_one_record_per_trade(processor: FrameProcessor) -> None:
    raw = frame(
        trade(),
        trade(s="BINANCE:BTCUSDT", p=95_000.12, v=0.00123, c=None, t=NOW_MS - 5),
    )
    result = processor.process(raw, now_ms=NOW_MS)
    assert result.kind == "trade"
    assert result.trades == 2 and result.accounted_items == 2
    assert not result.dead_letters
    assert records(result) == [
        ("AAPL", TradeRecord("AAPL", 100.5, 10.0, NOW_MS - 1000, ["1", "12"], NOW_MS, "simulator")),
        (
            "BINANCE:BTCUSDT",
            TradeRecord(
                "BINANCE:BTCUSDT", 95_000.12, 0.00123, NOW_MS - 5, None, NOW_MS, "simulator"
            ),
        ),
    ]
    assert result.last_trade_ts_ms == NOW_MS - 5


def test_fractional_volume_stays_a_float(processor: FrameProcessor) -> None:
    result = processor.process(frame(trade(s="BINANCE:BTCUSDT", v=0.00042)), now_ms=NOW_MS)
    ((_, record),) = records(result)
    assert record.volume == 0.00042 and record.price * record.volume > 0


def test_records_carry_their_log_position_trades_first_then_dead_letters(
    processor: FrameProcessor,
) -> None:
    raw = frame(trade(), trade(p=-1), trade(s="BINANCE:BTCUSDT"), trade(s="NOPE"))
    prefix = log_position_prefix("ab12", 7)
    result = processor.process(raw, now_ms=NOW_MS, position_prefix=prefix)
    positions = [parse_log_position(r.log_position) for _, r in records(result)]  # type: ignore[arg-type]
    assert [(p.log_id, p.seq, p.item) for p in positions] == [("ab12", 7, 0), ("ab12", 7, 1)]
    letters = [
        msgspec.json.decode(encode_dead_letter(letter, f"{prefix}{2 + i}"), type=DeadLetter)
        for i, letter in enumerate(result.dead_letters)
    ]
    assert [parse_log_position(d.log_position).item for d in letters] == [2, 3]  # type: ignore[arg-type]
    assert processor.process(raw, now_ms=NOW_MS).records[0][1] == encode_record_without_position(
        processor.process(raw, now_ms=NOW_MS, position_prefix=prefix).records[0][1]
    )


def encode_record_without_position(value: bytes) -> bytes:
    record = msgspec.json.decode(value, type=TradeRecord)
    return msgspec.json.encode(msgspec.structs.replace(record, log_position=None))


def test_volume_zero_price_updates_are_kept(processor: FrameProcessor) -> None:
    result = processor.process(frame(trade(v=0)), now_ms=NOW_MS)
    assert [r.volume for _, r in records(result)] == [0.0]


def test_missing_conditions_are_null(processor: FrameProcessor) -> None:
    raw = b'{"type":"trade","data":[{"p":1.0,"s":"AAPL","t":%d,"v":1}]}' % (NOW_MS - 1)
    ((_, record),) = records(processor.process(raw, now_ms=NOW_MS))
    assert record.conditions is None


def test_recorded_sessions_from_past_days_are_valid(processor: FrameProcessor) -> None:
    old = 1_546_300_800_000  # 2019-01-01
    ((_, record),) = records(processor.process(frame(trade(t=old)), now_ms=NOW_MS))
    assert record.trade_ts_ms == old


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"p": 0}, "price"),
        ({"p": -1.5}, "price"),
        ({"v": -1}, "volume"),
        ({"t": 1_700_000_000}, "before 2000"),  # seconds, not ms
        ({"t": EPOCH_2000_MS - 1}, "before 2000"),
        ({"t": NOW_MS + DEFAULT_FUTURE_TOLERANCE_MS + 1}, "ahead"),
        ({"s": "GME"}, "not subscribed"),
    ],
)
def test_invalid_trades_are_dead_lettered_with_a_reason(
    processor: FrameProcessor, bad: dict[str, object], reason: str
) -> None:
    good = trade()
    result = processor.process(frame(good, trade(**bad)), now_ms=NOW_MS)
    assert len(result.records) == 1 and len(result.dead_letters) == 1
    letter = result.dead_letters[0]
    assert reason in letter.reason
    assert letter.received_ts_ms == NOW_MS and letter.source == "simulator"
    assert msgspec.json.decode(letter.raw)["s"] == trade(**bad)["s"]


def test_an_overflowing_number_dead_letters_the_frame(processor: FrameProcessor) -> None:
    raw = b'{"type":"trade","data":[{"p":1e400,"s":"AAPL","t":%d,"v":1}]}' % (NOW_MS - 1)
    result = processor.process(raw, now_ms=NOW_MS)  # msgspec refuses 1e400 outright
    (letter,) = result.dead_letters
    assert result.kind == "malformed" and "out of range" in letter.reason


@pytest.mark.parametrize(
    "bad",
    [
        {"p": "100.5"},
        {"t": 1.7e12},
        {"t": "1764000000000"},
        {"s": 42},
        {"c": "1"},
        {"c": [1, 2]},
        {"v": None},
        {"p": True},
    ],
)
def test_wrong_types_cost_only_the_bad_trade(processor: FrameProcessor, bad: dict) -> None:
    result = processor.process(frame(trade(), trade(**bad), trade(v=3)), now_ms=NOW_MS)
    assert result.kind == "trade" and result.trades == 3
    assert [r.volume for _, r in records(result)] == [10.0, 3.0]
    (letter,) = result.dead_letters
    assert letter.reason.startswith("invalid trade")


def test_a_trade_that_is_not_an_object_is_dead_lettered(processor: FrameProcessor) -> None:
    result = processor.process(b'{"type":"trade","data":[42, null]}', now_ms=NOW_MS)
    assert result.trades == 2 and len(result.dead_letters) == 2 and not result.records


def test_ping(processor: FrameProcessor) -> None:
    result = processor.process(b'{"type":"ping"}', now_ms=NOW_MS)
    assert result.kind == "ping" and result.accounted_items == 0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"type":"error","msg":"Subscribing to too many symbols"}', "too many"),
        (b'{"type":"error","msg":"Invalid symbol XYZ$"}', "Invalid symbol"),
        (b'{"type":"error","msg":12}', "12"),
    ],
)
def test_error_frames_surface_their_message(
    processor: FrameProcessor, raw: bytes, message: str
) -> None:
    result = processor.process(raw, now_ms=NOW_MS)
    assert result.kind == "error" and message in (result.error_message or "")
    assert result.accounted_items == 0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"}{ not json", "not JSON"),
        (b'{"type":"trade","data":[{"p":1.5,"s":"AA', "not JSON"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b"[1, 2, 3]", "JSON object"),
        (b'"ping"', "JSON object"),
        (b'{"type":"news","headline":"x"}', "unknown frame type"),
        (b'{"data":[]}', "unknown frame type"),
        (b'{"type":"trade","data":null}', "data"),
        (b'{"type":"trade"}', "data"),
        (b"", "not JSON"),
    ],
)
def test_malformed_frames_become_one_dead_letter(
    processor: FrameProcessor, raw: bytes, reason: str
) -> None:
    result = processor.process(raw, now_ms=NOW_MS)
    assert result.kind == "malformed"
    (letter,) = result.dead_letters
    assert reason in letter.reason
    assert letter.raw == raw.decode("utf-8", "replace")
    assert result.accounted_items == 1


def test_empty_trade_frame_accounts_for_nothing(processor: FrameProcessor) -> None:
    result = processor.process(b'{"type":"trade","data":[]}', now_ms=NOW_MS)
    assert result.kind == "trade" and result.accounted_items == 0


def test_dead_letters_round_trip_through_the_contract(processor: FrameProcessor) -> None:
    from producer.frames import encode_dead_letter

    result = processor.process(b"oops", now_ms=NOW_MS)
    encoded = encode_dead_letter(result.dead_letters[0])
    assert msgspec.json.decode(encoded, type=DeadLetter) == result.dead_letters[0]


# --- property: nothing crashes, everything is accounted for ----------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=12,
)
trade_like = st.fixed_dictionaries(
    {},
    optional={
        "p": st.floats(allow_nan=False) | st.integers() | json_scalars,
        "s": st.sampled_from([*SYMBOLS, "GME", ""]) | json_scalars,
        "t": st.integers(min_value=-(2**63), max_value=2**63 - 1) | json_scalars,
        "v": st.floats(allow_nan=False) | st.integers(min_value=-5, max_value=10**6) | json_scalars,
        "c": st.none() | st.lists(st.text(max_size=3), max_size=3) | json_values,
    },
)
frames = st.one_of(
    st.builds(lambda d: {"type": "trade", "data": d}, st.lists(trade_like, max_size=6)),
    st.builds(lambda d: {"type": "trade", "data": d}, json_values),
    st.builds(lambda m: {"type": "error", "msg": m}, json_values),
    st.dictionaries(st.sampled_from(["type", "data", "msg"]), json_values, max_size=3),
    json_values,
)


def _expected_items(obj: object) -> int | None:
    """Items a frame must account for; None when it is not a trade frame with a list."""
    if isinstance(obj, dict) and obj.get("type") == "trade" and isinstance(obj.get("data"), list):
        return len(obj["data"])
    return None


@settings(max_examples=300, deadline=None)
@given(frames)
def test_generated_frames_never_crash_and_are_accounted(obj: object) -> None:
    processor = FrameProcessor(SYMBOLS, "replay")
    result = processor.process(msgspec.json.encode(obj), now_ms=NOW_MS)
    expected = _expected_items(obj)
    if expected is not None:
        assert result.kind == "trade"
        assert result.trades == expected == result.accounted_items
    elif result.kind in ("ping", "error"):
        assert result.accounted_items == 0
    else:
        assert result.kind == "malformed" and result.accounted_items == 1
    for _, value in result.records:
        record = msgspec.json.decode(value, type=TradeRecord)
        assert record.price > 0 and math.isfinite(record.price)
        assert record.volume >= 0 and record.symbol in SYMBOLS


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_crash(raw: bytes) -> None:
    result = FrameProcessor(SYMBOLS, "finnhub").process(raw, now_ms=NOW_MS)
    assert result.kind in ("trade", "ping", "error", "malformed")
    assert result.accounted_items == (
        result.trades if result.kind == "trade" else (1 if result.kind == "malformed" else 0)
    )
