"""`--help` reads well: every subcommand's help works and lists a flag for each field of the settings it is derived
from, train and bench grouped, each default said once, no internal notes."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import re
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from cliplit.benchmarks import cli as bench_cli
from cliplit.core.cli_settings import Flag, SettingsCli, setting
from cliplit.export import cli as export_cli
from cliplit.runtime.cli import COMMAND_GROUP, build_parser
from cliplit.train import cli as train_cli

SUBCOMMANDS = sorted(point.name for point in entry_points(group=COMMAND_GROUP))


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


@pytest.mark.parametrize("name", SUBCOMMANDS)
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


def test_every_subcommand_is_covered():
    assert set(SUBCOMMANDS) == {"bench", "distill", "enhance", "export", "serve", "train"}


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_every_subcommand_help_lists_each_settings_field(name, capsys):
    """`cliplit NAME --help` exits 0 and names a flag for every field of the settings the command is derived from."""
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([name, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    module = importlib.import_module(next(p.value for p in entry_points(group=COMMAND_GROUP) if p.name == name))
    assert module.SETTINGS
    for options in module.SETTINGS:
        assert options.fields(), options.settings
        for field, names in options.option_strings().items():
            shown = names[0] if names[0].startswith("-") else options.flag(field).metavar  # a positional's metavar
            assert shown in text, f"{name}: {options.settings.__name__}.{field}"


def test_export_engine_script_lists_each_settings_field(capsys):
    with pytest.raises(SystemExit):
        export_cli.main(["--help"])
    text = capsys.readouterr().out
    assert all(names[0] in text for options in export_cli.SETTINGS for names in options.option_strings().values())


# --- the helper itself ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Example:
    name: str = setting("x", "a name", choices=("x", "y"))
    count: int | None = setting(None, "how many (default: all)")
    ratio: float = setting(0.5, "a ratio")
    path: Path | None = setting(None, "a file", names=("-p", "--path"))  # noqa: RUF009 (setting makes a field)
    sizes: tuple[int, ...] = setting((1, 2), "sizes")
    seen: tuple[Path, ...] = setting((), "repeatable", repeat=True)
    loud: bool = setting(False, "be loud")
    colour: bool = setting(True, "use colour")
    given: str = setting("", "must be given")
    size: int = setting(0, "a size", type=str, parse=len)


def example_parser(**options) -> tuple[argparse.ArgumentParser, SettingsCli]:
    cli = SettingsCli(Example, **options)
    parser = argparse.ArgumentParser()
    cli.add_to(parser)
    return parser, cli


def test_settings_round_trip_through_the_flags():
    parser, cli = example_parser()
    assert cli.from_args(parser.parse_args([])) == Example()
    argv = ["--name", "y", "--count", "3", "--ratio", "2", "-p", "f", "--sizes", "4", "5", "--seen", "a"]
    argv += ["--seen", "b", "--loud", "--no-colour", "--given", "g", "--size", "abcd"]
    got = cli.from_args(parser.parse_args(argv))
    assert got == Example("y", 3, 2.0, Path("f"), (4, 5), (Path("a"), Path("b")), True, False, "g", 4)
    assert cli.from_args(parser.parse_args([]), count=7).count == 7


def test_help_says_each_default_once_and_errors_stay_argparse_errors(capsys):
    parser, _ = example_parser(groups={"ratio": "numbers"})
    text = " ".join(parser.format_help().split())
    assert "a name (default: x)" in text and "how many (default: all)" in text and "a ratio (default: 0.5)" in text
    assert "sizes (default: 1 2)" in text and "use colour (default: on)" in text and "must be given (required)" in text
    assert "be loud (default" not in text and "numbers:" in text and "-p PATH, --path PATH" in text
    with pytest.raises(SystemExit):
        parser.parse_args(["--name", "z"])
    assert "invalid choice: 'z'" in capsys.readouterr().err


def test_flags_given_by_the_command_win_and_suppressed_defaults_stay_absent():
    parser, cli = example_parser(flags={"name": Flag("which one", names=("--label",))}, exclude=frozenset({"size"}))
    assert "a size" not in parser.format_help() and "which one (default: x)" in parser.format_help()
    assert cli.from_args(parser.parse_args(["--label", "q"])).name == "q"
    quiet = argparse.ArgumentParser()
    cli.add_to(quiet, suppress_defaults=True)
    assert vars(quiet.parse_args(["--ratio", "1"])) == {"ratio": 1.0}
