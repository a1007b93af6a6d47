"""Helpers every test folder shares: waiting, free ports, a webhook receiver, reading a
Kafka topic back, and the whole platform started for a drill."""
