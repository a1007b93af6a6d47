"""The Spark view of the Kafka record, derived from the one contract ``TradeRecord``.

Nothing here is written by hand twice: the JSON schema Spark parses with comes from the
msgspec struct's fields, and the validity rules (required fields, allowed ``source``
values) come from the same type information, so a change to the contract changes what
Spark accepts.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from pyspark.sql import types as T

from finpipe.contracts import TradeRecord


class UnsupportedContractType(TypeError):
    """The contract uses a type that has no Spark mapping here yet: extend ``spark_type``."""


def _without_none(info: msgspec.inspect.Type) -> tuple[msgspec.inspect.Type, bool]:
    """(the type without ``None``, whether ``None`` was allowed)."""
    if isinstance(info, msgspec.inspect.UnionType):
        rest = [t for t in info.types if not isinstance(t, msgspec.inspect.NoneType)]
        if len(rest) != 1:
            raise UnsupportedContractType(f"unions other than 'X | None' are not mapped: {info}")
        return rest[0], len(rest) != len(info.types)
    return info, False


def spark_type(info: msgspec.inspect.Type) -> T.DataType:
    match info:
        case msgspec.inspect.StrType() | msgspec.inspect.LiteralType():
            return T.StringType()
        case msgspec.inspect.FloatType():
            return T.DoubleType()
        case msgspec.inspect.IntType():
            return T.LongType()
        case msgspec.inspect.BoolType():
            return T.BooleanType()
        case msgspec.inspect.ListType(item_type=item):
            inner, nullable = _without_none(item)
            return T.ArrayType(spark_type(inner), containsNull=nullable)
        case _:
            raise UnsupportedContractType(f"no Spark type for contract type {info}")


@dataclass(frozen=True)
class RecordContract:
    """What Spark needs to know about ``TradeRecord``."""

    schema: T.StructType
    required: tuple[str, ...]  # must be present and non-null
    allowed_values: dict[str, tuple[str, ...]]  # Literal fields


def record_contract(struct: type[msgspec.Struct] = TradeRecord) -> RecordContract:
    info = msgspec.inspect.type_info(struct)
    assert isinstance(info, msgspec.inspect.StructType)
    fields: list[T.StructField] = []
    required: list[str] = []
    allowed: dict[str, tuple[str, ...]] = {}
    for field in info.fields:
        base, nullable = _without_none(field.type)
        fields.append(T.StructField(field.encode_name, spark_type(base), nullable=True))
        if not nullable:
            required.append(field.encode_name)
        if isinstance(base, msgspec.inspect.LiteralType):
            allowed[field.encode_name] = tuple(str(v) for v in base.values)
    return RecordContract(T.StructType(fields), tuple(required), allowed)


TRADE_RECORD = record_contract()
