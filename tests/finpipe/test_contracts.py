from __future__ import annotations

import urllib.parse

import msgspec
import pyarrow as pa
import pytest

from finpipe import contracts, delta_commit


@pytest.mark.parametrize("symbol", ["AAPL", "BINANCE:BTCUSDT", "BRK.B", "COINBASE:BTC-USD", "A/B%"])
def test_a_partition_value_is_one_folder_name_that_decodes_back(symbol: str) -> None:
    path = delta_commit.data_file_path({"trade_date": "2026-01-02", "symbol": symbol}, 7)
    day, folder, name = path.split("/")
    assert day == "trade_date=2026-01-02" and name.startswith("part-000000000007-")
    assert ":" not in folder
    assert urllib.parse.unquote(folder.removeprefix("symbol=")) == symbol


def test_the_tables_layout_is_the_contracts() -> None:
    assert contracts.LAKE_TABLE.partition_by == ("trade_date", "symbol")
    assert contracts.LAKE_TABLE.file_schema.names == [
        n for n in contracts.LAKE_SCHEMA.names if n not in ("trade_date", "symbol")
    ]
    assert all(pa.types.is_timestamp(f.type) and f.type.unit == "us" and f.type.tz == "UTC"
               for f in contracts.LAKE_SCHEMA if f.name.endswith("_ts"))  # fmt: skip
    assert set(contracts.LAKE_STATS_COLUMNS) <= set(contracts.LAKE_SCHEMA.names)
    assert contracts.REJECTS_TABLE.partition_by == ("processed_date",)


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
