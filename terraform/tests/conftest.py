"""Fixtures of the offline Terraform checks: the real tree, its evaluated configuration and
its checkov report (each computed once per session), and broken copies of the tree."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tfcheck  # noqa: E402


@pytest.fixture(scope="session")
def tree() -> Path:
    return tfcheck.TERRAFORM_DIR


@pytest.fixture(scope="session")
def plan(tree):
    return tfcheck.load_plan(tree)


@pytest.fixture(scope="session")
def checkov_report(tree):
    return tfcheck.run_checkov(tree)


class BrokenTree:
    """A copy of terraform/ (without its tests) that a test breaks on purpose."""

    def __init__(self, root: Path):
        self.root = root

    def edit(self, rel: str, old: str, new: str, count: int = 1) -> None:
        """Replace `old` by `new` in one file; the text must be there, so that a change of
        the real tree makes the test fail instead of silently breaking nothing."""
        path = self.root / rel
        text = path.read_text()
        found = text.count(old)
        assert found >= count, f"{rel} no longer contains {old!r}: update this test"
        path.write_text(text.replace(old, new) if count == -1 else text.replace(old, new, count))

    def append(self, rel: str, text: str) -> None:
        path = self.root / rel
        path.write_text(path.read_text() + text)

    def plan(self):
        return tfcheck.load_plan(self.root)


@pytest.fixture
def broken(tmp_path, tree) -> BrokenTree:
    dest = tmp_path / "terraform"
    shutil.copytree(
        tree,
        dest,
        ignore=shutil.ignore_patterns("tests", ".terraform", "__pycache__", "*.tfstate*", ".pytest_cache"),
    )
    return BrokenTree(dest)
