"""MINIO_DRIVES: one drive folder as before, or an erasure-coded set of folders."""

from __future__ import annotations

from pathlib import Path

from finpipe.settings import load_settings
from infra.services import minio_drives, minio_process


def test_one_drive_keeps_its_folder(tmp_path: Path) -> None:
    settings = load_settings(FINPIPE_HOME=tmp_path)
    process = minio_process(settings)
    assert minio_drives(settings) == [tmp_path / "minio" / "data"]
    assert str(tmp_path / "minio" / "data") in process.argv
    assert "MINIO_ROOTDRIVE_THRESHOLD_SIZE" not in process.env


def test_four_drives_are_one_erasure_set_of_folders_on_one_disk(tmp_path: Path) -> None:
    settings = load_settings(FINPIPE_HOME=tmp_path, MINIO_DRIVES=4)
    drives = minio_drives(settings)
    assert drives == [tmp_path / "minio" / f"drive-{i}" for i in range(1, 5)]
    process = minio_process(settings)
    assert [arg for arg in process.argv if arg.startswith(str(tmp_path))] == [
        str(d) for d in drives
    ]
    # Folders of the root disk are drives here, as they are meant to be.
    assert process.env["MINIO_ROOTDRIVE_THRESHOLD_SIZE"] == "1"
