"""What changed in a Delta table since a version: its log entries, read directly.

Every consumer that follows the lake (the incremental summaries, the late-data sensor,
the freshness observation, the dashboard's tail) asks one question: which rows arrived
after the version I last saw? The log answers it exactly: each commit's ``add`` actions
with ``dataChange`` true are new rows; a compaction's adds carry ``dataChange`` false
(the same rows in other files) and are not news. A diff of two snapshots cannot tell the
two apart, and costs a log replay per side.

Reading ``_delta_log/<version>.json`` for each version after ``since`` costs one GET per
commit. When an entry is gone (older than the table's log retention), the answer is
``truncated``: the caller falls back to reading the snapshot.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from dataclasses import dataclass, field

from obstore.exceptions import NotFoundError

from finpipe.lake import LakeTable

LOG_DIR = "_delta_log"


@dataclass(frozen=True)
class FileAdd:
    """One data file a commit added with new rows."""

    version: int
    path: str  # relative to the table, as the file is named in the store
    partition: dict[str, str | None]
    rows: int | None
    min_values: dict[str, object]
    max_values: dict[str, object]
    commit_ms: int

    @property
    def trade_date(self) -> dt.date | None:
        day = self.partition.get("trade_date")
        return dt.date.fromisoformat(day) if day else None

    @property
    def symbol(self) -> str | None:
        return self.partition.get("symbol")

    def bound(self, column: str, which: str) -> dt.datetime | None:
        """A timestamp column's recorded bound (``min``/``max``), None when not recorded."""
        value = (self.min_values if which == "min" else self.max_values).get(column)
        if not isinstance(value, str):
            return None
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Changes:
    """The data a table received in versions ``(since, version]``."""

    since: int
    version: int
    adds: list[FileAdd] = field(default_factory=list)
    removed_data: bool = False
    """A commit removed rows (a delete or an overwrite), not only rewrote them."""
    truncated: bool = False
    """An entry of the range is gone (log retention): the answer is incomplete."""
    commit_ms: int | None = None
    """When the newest version of the range was committed."""

    @property
    def rows(self) -> int:
        return sum(a.rows or 0 for a in self.adds)


def log_entry(table: LakeTable, version: int) -> bytes | None:
    """The JSON of one commit, None when the store no longer (or not yet) has it."""
    try:
        return bytes(table.store.get(f"{LOG_DIR}/{version:020d}.json").bytes())
    except (FileNotFoundError, NotFoundError):
        return None


def parse_entry(version: int, text: bytes) -> tuple[list[FileAdd], bool, int | None]:
    """(data-change adds, whether rows were removed, the commit's time) of one entry."""
    adds: list[FileAdd] = []
    removed = False
    commit_ms: int | None = None
    actions = [json.loads(line) for line in text.splitlines() if line.strip()]
    for action in actions:
        if "commitInfo" in action:
            commit_ms = action["commitInfo"].get("timestamp")
    for action in actions:
        if "add" in action and action["add"].get("dataChange", True):
            add = action["add"]
            stats = json.loads(add["stats"]) if add.get("stats") else {}
            adds.append(
                FileAdd(
                    version=version,
                    # The log percent-encodes the path once more than the store names it.
                    path=urllib.parse.unquote(add["path"]),
                    partition=dict(add.get("partitionValues") or {}),
                    rows=stats.get("numRecords"),
                    min_values=stats.get("minValues") or {},
                    max_values=stats.get("maxValues") or {},
                    commit_ms=commit_ms or add.get("modificationTime", 0),
                )
            )
        elif "remove" in action and action["remove"].get("dataChange", True):
            removed = True
    return adds, removed, commit_ms


def changes(table: LakeTable, since: int, version: int) -> Changes:
    """What versions ``(since, version]`` of ``table`` added (``since`` = -1: from the
    start). ``version`` is the caller's snapshot, so the answer and the snapshot agree."""
    adds: list[FileAdd] = []
    removed = False
    commit_ms: int | None = None
    for v in range(max(since, -1) + 1, version + 1):
        text = log_entry(table, v)
        if text is None:
            return Changes(since, version, truncated=True)
        found, removed_here, commit_ms = parse_entry(v, text)
        adds.extend(found)
        removed = removed or removed_here
    return Changes(since, version, adds, removed, False, commit_ms)
