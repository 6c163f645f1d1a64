"""Fixtures of the CLI tests."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from clipstore.cli import main


@pytest.fixture
def run(store_path):
    """Invoke the CLI in-process on the test's store: `run("search", "a red circle")` adds `--store`."""
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(main, [*args, "--store", str(store_path)] if args and args[0] != "--help" else list(args))

    return invoke
