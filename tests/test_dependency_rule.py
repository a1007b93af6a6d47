"""The dependency rule of pyproject.toml's import contracts bites: an import against it fails.

``make lint`` runs ``lint-imports`` on the tree; here it runs on a copy of the tree with one
forbidden import added, and must fail naming the broken contract.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("finpipe", "finpipe_dagster", "producer", "spark", "streamlit_app", "infra")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_tree(target: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(
            REPO / package, target / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO / "pyproject.toml", target / "pyproject.toml")
    return target


@pytest.mark.parametrize(
    ("module", "forbidden_import", "contract"),
    [
        ("finpipe/contracts.py", "import dagster", "finpipe (the core) imports no other"),
        ("finpipe/settings.py", "import producer.frames", "finpipe (the core) imports no other"),
        ("streamlit_app/store.py", "import spark.parse", "do not import each other"),
        ("producer/frames.py", "import finpipe_dagster.instance", "import only the core"),
        ("finpipe_dagster/partitions.py", "import infra.processes", "does not import infra"),
        ("finpipe_dagster/partitions.py", "import boto3", "no S3 client of its own"),
    ],
)
def test_an_import_against_the_rule_fails_lint(
    tmp_path: Path, module: str, forbidden_import: str, contract: str
) -> None:
    root = copy_tree(tmp_path)
    path = root / module
    path.write_text(path.read_text() + f"\n{forbidden_import}  # noqa\n")
    result = lint_imports(root)
    assert result.returncode != 0, result.stdout
    assert contract in result.stdout and "BROKEN" in result.stdout, result.stdout


def test_the_tree_keeps_the_rule(tmp_path: Path) -> None:
    result = lint_imports(copy_tree(tmp_path))
    assert result.returncode == 0, result.stdout
