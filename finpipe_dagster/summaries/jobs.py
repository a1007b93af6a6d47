"""Asset jobs over the summaries (and, closing a day, its compaction)."""

from dagster import AssetSelection, define_asset_job

from finpipe import summaries
from finpipe_dagster.instance import MAINTENANCE_TAG

REFRESH_TAG = "finpipe/summaries"
RETRY_TAGS = {"dagster/max_retries": "3", "dagster/retry_strategy": "FROM_FAILURE"}
"""Run retries (enabled in ``dagster.yaml``, see ``finpipe_dagster.instance``) for the runs
that finalize a closed day: a failed one is re-executed from its failed step. Today's
refresh runs go without: the next refresh comes a minute later anyway."""
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
    # Its compaction is lake maintenance: the run queue admits one such run at a time.
    tags={REFRESH_TAG: "close", MAINTENANCE_TAG: "close", **RETRY_TAGS},
    description=(
        "Finalizes a closed day: its summaries, then (an asset dependency) compacts its "
        "lake files. Failed runs are retried; one maintenance run at a time."
    ),
)
