from __future__ import annotations

import msgspec
import pytest

from finpipe import contracts


@pytest.mark.parametrize("symbol", ["AAPL", "BINANCE:BTCUSDT", "BRK.B", "COINBASE:BTC-USD", "A/B%"])
def test_partition_dir_round_trips_any_symbol(symbol: str) -> None:
    folder = contracts.partition_dir("2026-01-02", symbol)
    assert folder.startswith("trade_date=2026-01-02/symbol=")
    value = folder.split("symbol=", 1)[1]
    assert "/" not in value and ":" not in value
    assert contracts.symbol_from_partition_value(value) == symbol


def test_batch_file_names_sort_in_batch_order() -> None:
    names = [contracts.batch_file_name(i) for i in (2, 10, 1234)]
    assert names == sorted(names)
    assert contracts.batch_file_name(7) == "batch-000000000007.parquet"


def test_server_frames_decode_by_type() -> None:
    decoder = msgspec.json.Decoder(contracts.ServerFrame)
    frame = decoder.decode(
        b'{"type":"trade","data":[{"p":1.5,"s":"AAPL","t":1700000000000,"v":0,"c":null}]}'
    )
    assert isinstance(frame, contracts.TradeFrame)
    assert frame.data[0] == contracts.RawTrade(p=1.5, s="AAPL", t=1700000000000, v=0.0, c=None)
    assert isinstance(decoder.decode(b'{"type":"ping"}'), contracts.PingFrame)
    assert decoder.decode(b'{"type":"error","msg":"Invalid symbol"}').msg == "Invalid symbol"
    with pytest.raises(msgspec.ValidationError):
        decoder.decode(b'{"type":"trade","data":[{"p":"x","s":"AAPL","t":1,"v":1}]}')


def test_lake_schema_names_every_column_of_the_contract() -> None:
    assert contracts.LAKE_SCHEMA.names == [
        "symbol", "price", "volume", "trade_value", "trade_ts", "ingest_ts", "processed_ts",
        "conditions", "kafka_partition", "kafka_offset", "trade_date",
    ]  # fmt: skip
