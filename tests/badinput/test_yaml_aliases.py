"""A YAML alias bomb ("billion laughs") in a settings file is refused at once.

Aliases (`*name`) are not copied when the file is composed, but the loader's output is
walked as plain data, so nine levels of nine aliases become 9**9 nodes: `config check`
once held 5.3 GB for two minutes. `load()` now counts what the aliases would expand to
and refuses past `settings.MAX_EXPANDED_NODES`, naming the file and a line of the bomb;
a self-referencing alias is refused the same way. A modest use of anchors (`<<: *defaults`
shared by two accounts) still loads. Measured: time and peak memory of the refusal.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from smsmta.cli import main
from smsmta.settings import ConfigError, load

HEAD = "kind: mid\nhost_id: bomb\n"


def bomb(levels: int = 9, width: int = 9) -> str:
    """`levels` lines, each a list of `width` aliases to the line before: width**levels."""
    lines = ['a0: &a0 ["lol"]']
    for level in range(1, levels + 1):
        refs = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return HEAD + "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_quickly_naming_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        load(path)
    seconds = time.monotonic() - started
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert seconds < 1.0, seconds
    assert grown_mb < 50, grown_mb
    (issue,) = caught.value.issues
    assert issue.file == str(path) and issue.line is not None and 3 <= issue.line <= 12
    assert "alias" in issue.message
    print(f"alias bomb 9**9 refused in {seconds * 1000:.0f} ms, peak RSS +{grown_mb:.0f} MB")


def test_config_check_refuses_the_bomb_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "bomb.yaml"
    path.write_text(bomb())
    started = time.monotonic()
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert time.monotonic() - started < 2.0
    assert result.exit_code == 2, result.output
    assert f"{path}:" in result.output and "alias" in result.output


def test_an_alias_to_its_own_container_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "loop.yaml"
    path.write_text(HEAD + "mta: &loop\n  children: 2\n  extra: *loop\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert any("alias" in issue.message for issue in caught.value.issues)


def test_a_modest_use_of_anchors_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "anchors.yaml"
    path.write_text(
        HEAD
        + """\
accounts:
  - name: ops_a
    operator: ops
    connection: &conn
      mode: tx_rx
      smsc_name: Sim
      server: 127.0.0.1
      port: 2775
      system_id: a
      password: secret
  - name: ops_b
    operator: ops
    connection:
      <<: *conn
      system_id: b
"""
    )
    config = load(path)
    assert [a.connection.system_id for a in config.accounts] == ["a", "b"]
    assert config.accounts[1].connection.port == 2775
