"""The console script: `--help` at every level, and the interim demo."""

from __future__ import annotations

import click
from click.testing import CliRunner

from smsmta.cli import main


def walk(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [path]
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            paths.extend(walk(sub, (*path, name)))
    return paths


def test_help_at_every_level() -> None:
    runner = CliRunner()
    paths = walk(main)
    assert ("config", "check") in paths
    assert ("db", "upgrade") in paths
    for path in paths:
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert result.output.startswith("Usage: "), path


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("smsmta, version ")
