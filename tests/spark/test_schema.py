"""The Spark schema of the Kafka record is derived from the contract, not written twice."""

from __future__ import annotations

import msgspec
import pytest
from pyspark.sql import types as T

from finpipe.contracts import TradeRecord
from spark.schema import TRADE_RECORD, UnsupportedContractType, record_contract


def test_fields_follow_the_trade_record_struct() -> None:
    assert TRADE_RECORD.schema.fieldNames() == list(TradeRecord.__struct_fields__)
    types = {f.name: f.dataType for f in TRADE_RECORD.schema.fields}
    assert types == {
        "symbol": T.StringType(),
        "price": T.DoubleType(),
        "volume": T.DoubleType(),
        "trade_ts_ms": T.LongType(),
        "conditions": T.ArrayType(T.StringType(), containsNull=False),
        "ingest_ts_ms": T.LongType(),
        "source": T.StringType(),
    }


def test_optional_fields_are_not_required_and_literals_are_enumerated() -> None:
    assert "conditions" not in TRADE_RECORD.required
    assert set(TRADE_RECORD.required) == set(TradeRecord.__struct_fields__) - {"conditions"}
    assert set(TRADE_RECORD.allowed_values["source"]) == {"finnhub", "simulator", "replay"}


def test_a_new_contract_field_changes_the_spark_schema() -> None:
    class Extended(msgspec.Struct):
        symbol: str
        exchange: str | None = None
        sizes: list[float] = []

    contract = record_contract(Extended)
    assert contract.schema.fieldNames() == ["symbol", "exchange", "sizes"]
    assert contract.required == ("symbol", "sizes")


def test_unmapped_contract_types_fail_loudly() -> None:
    class Odd(msgspec.Struct):
        payload: dict[str, int]

    with pytest.raises(UnsupportedContractType, match="no Spark type"):
        record_contract(Odd)
