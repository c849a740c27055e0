"""Fixtures shared by the spine tests."""

from pathlib import Path

import pytest


@pytest.fixture
def tiny_config() -> Path:
    """A 64 px, quarter-width ResNet-18 config with a 1+1 epoch schedule (plumbing tests)."""
    return Path(__file__).with_name("tiny_train.toml")
