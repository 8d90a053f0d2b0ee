"""Shared pytest fixtures.

The official-code parity fixtures (121 MB) live outside the repository, in ``../shared/fixtures/mdetr_official``
next to the checkout, or wherever ``$MDETR_OFFICIAL_FIXTURES`` points. Tests that need them skip with the
reason when they are absent, except under CI (``CI=true``) where a missing folder is an error.
"""
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FIXTURES = REPO_ROOT.parent / "shared" / "fixtures" / "mdetr_official"


def official_fixtures_dir() -> Path:
    return Path(os.environ.get("MDETR_OFFICIAL_FIXTURES", DEFAULT_FIXTURES))


@pytest.fixture(scope="session")
def official_fixtures() -> Path:
    """Folder of the official MDETR parity fixtures (see its README)."""
    path = official_fixtures_dir()
    if not (path / "README.md").is_file():
        message = (
            f"official MDETR fixtures not found at {path}; set MDETR_OFFICIAL_FIXTURES to the "
            "mdetr_official folder"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    """Tests never reach the network: HF loads must come from local folders."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
