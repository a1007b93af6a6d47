"""The lake: the external assets, the observation sensor, quality checks and compaction."""
