"""What the checkpoint regression guard compares: the checkpoint's last planned batch."""

from __future__ import annotations

from pathlib import Path

from spark.job import last_planned_batch


def test_a_new_checkpoint_has_planned_nothing(tmp_path: Path) -> None:
    assert last_planned_batch(tmp_path / "missing") == -1
    (tmp_path / "offsets").mkdir()
    assert last_planned_batch(tmp_path) == -1


def test_the_last_planned_batch_counts_even_without_its_commit(tmp_path: Path) -> None:
    """A batch written but not committed is replayed into the same objects: expected."""
    (tmp_path / "offsets").mkdir()
    (tmp_path / "commits").mkdir()
    for batch in (7, 8, 9, 10):
        (tmp_path / "offsets" / str(batch)).write_text("v1")
    for batch in (7, 8, 9):
        (tmp_path / "commits" / str(batch)).write_text("v1")
    (tmp_path / "offsets" / ".10.crc").write_text("")
    (tmp_path / "offsets" / "11.tmp").write_text("")
    assert last_planned_batch(tmp_path) == 10
