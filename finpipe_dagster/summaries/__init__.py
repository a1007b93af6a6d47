"""The DuckDB summaries: their SQL, assets, jobs, refresh and late-data sensors, schedules."""
