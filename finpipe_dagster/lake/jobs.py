"""The job that runs the lake's quality checks."""

from dagster import AssetSelection, define_asset_job

from finpipe_dagster.lake.assets import PROCESSED_TRADES

quality_checks_job = define_asset_job(
    "processed_trades_checks_job",
    selection=AssetSelection.checks_for_assets(PROCESSED_TRADES),
    description=(
        "Runs the lake's quality checks on what arrived since they last passed (the table "
        "version is the watermark)."
    ),
)
