"""Docs that can't drift: the README's set-up, CLI reference and settings table."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from outagewatch.cli import build_parser
from outagewatch.settings import SETTINGS

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_exactly_two_setup_commands_and_ci_runs_the_test_one() -> None:
    block = README.split("## Set-up on a fresh machine", 1)[1].split("```sh", 1)[1]
    block = block.split("```", 1)[0]
    commands = [ln.split("#", 1)[0].strip() for ln in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert re.search(r"^make test$", ci, re.MULTILINE)


def test_every_command_and_flag_is_documented() -> None:
    for name, sub in _subparsers().items():
        assert f"`{name}" in README, name
        for action in sub._actions:
            for opt in action.option_strings:
                if opt not in ("-h", "--help"):
                    assert opt in README, f"{name} {opt}"


def test_settings_table_matches_the_settings_module() -> None:
    rows = [ln for ln in README.splitlines() if ln.startswith("| `--")]
    table = {ln.split("|")[1].strip(" `"): ln for ln in rows}
    for s in SETTINGS:
        assert s.flag in table, s.flag
        assert f"`{s.env}`" in table[s.flag]
        if s.default:
            assert f"`{s.default}`" in table[s.flag]
    assert set(table) == {s.flag for s in SETTINGS}
