"""`--help` reads well: train and bench grouped, each default said once, no internal notes."""

from __future__ import annotations

import argparse
import re

import pytest

from cliplit.benchmarks import cli as bench_cli
from cliplit.export import cli as export_cli
from cliplit.runtime.cli import build_parser
from cliplit.train import cli as train_cli


def subcommand_parser(name: str) -> argparse.ArgumentParser:
    actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return actions[0].choices[name]


@pytest.mark.parametrize("name", ["train", "bench"])
def test_options_are_grouped(name):
    parser = subcommand_parser(name)
    groups = {group.title: group._group_actions for group in parser._action_groups if group._group_actions}
    options = {a.dest for a in parser._actions if a.option_strings and a.dest != "help"}
    grouped = {a.dest for title, actions in groups.items() if title != "options" for a in actions}
    ungrouped = {a.dest for a in groups.get("options", []) if a.dest != "help"}
    assert len(groups) >= 4 and grouped | ungrouped == options
    if name == "train":
        assert ungrouped == {"config", "resume"}  # the two that are not options of the run
        assert [title for title in groups if title != "options"] == list(train_cli.GROUPS.values())
        assert {a.dest for a in groups["losses"]} >= {"clip_loss_weight", "identity_weight", "rank_margin_backlit"}
    else:
        assert not ungrouped


@pytest.mark.parametrize("name", ["train", "bench", "enhance", "export"])
def test_each_default_is_said_once(name):
    text = subcommand_parser(name).format_help()
    assert "(default: None)" not in text
    for action in subcommand_parser(name)._actions:
        assert len(re.findall(r"\(default:", action.help or "")) <= 1, action.help


def test_train_help_covers_every_option_with_its_default():
    text = " ".join(subcommand_parser("train").format_help().split())
    assert (
        "its own cache" in text
        and "(default: off)" in text
        and "(default: 2000)" in text
        and "(default: as --epochs allows)" in text
    )
    assert all("--" + name.replace("_", "-") in text for name in train_cli.OPTIONS.option_strings())


def test_export_engine_help_has_no_internal_notes(capsys):
    with pytest.raises(SystemExit):
        export_cli.main(["--help"])
    text = capsys.readouterr().out
    assert "--onnx" in text and "import" not in text and "cliplit --help" not in text
    assert bench_cli.EXTRA == "bench" and export_cli.EXTRA == "export" and train_cli.EXTRA == "train"


def test_export_engine_help_names_every_shipped_weights_name():
    """`--weights` listed only clip-lit and clip-lit-init, although clip-lit-rt exports the same way."""
    from cliplit.core.weights import BUNDLED, RELEASED

    parser = argparse.ArgumentParser()
    export_cli.add_arguments(parser)
    text = " ".join(parser.format_help().split())
    assert all(name in text for name in (*RELEASED, *BUNDLED))
