"""Asset jobs over the summaries (and, closing a day, its compaction)."""

from dagster import AssetSelection, define_asset_job

from finpipe import summaries

REFRESH_TAG = "finpipe/summaries"
SUMMARY_KEYS = summaries.NAMES

summaries_job = define_asset_job(
    "summaries_job",
    selection=AssetSelection.assets(*SUMMARY_KEYS),
    tags={REFRESH_TAG: "refresh"},
    description="Rebuilds the summaries of the chosen day(s); today's runs every minute.",
)

close_day_job = define_asset_job(
    "close_day_job",
    selection=AssetSelection.assets(*SUMMARY_KEYS, "compacted_trades"),
    tags={REFRESH_TAG: "close"},
    description="Finalizes a closed day: its summaries, then compacts its lake files.",
)
