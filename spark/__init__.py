"""The Spark Structured Streaming job ``stock-ticks`` -> ``processed_trades`` (``finpipe-spark``).

Modules, in the order a record flows through them:

* ``parse``      - decode each Kafka value with the contract's own validator (msgspec
  ``TradeRecord``), enrich (trade_value, trade_date, Kafka coordinates); invalid records
  are kept with a reason, never dropped; ``transform`` runs it in Spark's Python workers;
* ``sink``       - ``foreachBatch``: shuffle by (trade_date, symbol), executors write;
* ``lake_files`` - pure pyarrow: one object per partition per batch, named by the batch id,
  rows sorted by Kafka coordinates, exact ``contracts.LAKE_SCHEMA``; rejects go to
  ``<lake_prefix>/_rejects/batch-<id>.parquet`` (``contracts.REJECTS_SCHEMA``);
* ``progress``   - the query listener and the heartbeat counters;
* ``job``        - the query and the loop that reports, stops and exits; ``cli`` - the entry point.

Exactly once for readers that glob the folder: a batch's offsets are in the local
checkpoint before it runs, so after a crash the same batch is replayed and rewrites the
same objects with the same rows; each object appears atomically. A reader can see a
batch's objects before Spark commits the batch, but never a row that will not stay, and
never a row twice. Proven by ``tests/spark/test_streaming_job.py`` (SIGKILL mid-batch).
"""
