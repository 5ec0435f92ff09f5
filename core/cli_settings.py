"""Command-line flags derived from a settings dataclass, and the dataclass built back from the parsed flags.

A command's options are the fields of a dataclass: their defaults, types and choices are stated there once, and the
flags, their help (with the default said once) and the value the command runs with all derive from the fields. What
a field alone cannot say (help text, choices, metavar, other option names, a parser such as "2G" -> bytes) comes from
its ``cli`` metadata (``setting(...)``) or, for a dataclass that does not carry it, from a ``Flag`` the command maps
the field's name to. Every ``cliplit`` subcommand builds its parser with this module, so they all read alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

_MISSING: Any = dataclasses.MISSING


@dataclasses.dataclass(frozen=True)
class Flag:
    """How one settings field appears on the command line, where its type and default do not say it."""

    help: str = ""
    choices: Sequence[Any] | None = None
    metavar: str | None = None
    #: option strings (default: ``--field-name``); a name without a leading '-' makes a positional argument
    names: tuple[str, ...] = ()
    required: bool = False
    #: a bool as ``--x/--no-x``; None: only where the field defaults to True (else ``--x`` alone turns it on)
    negatable: bool | None = None
    #: what argparse converts the text with, where the field's type is not it (e.g. ``str`` for a size in bytes)
    type: Callable[[str], Any] | None = None
    nargs: str | None = None
    #: a tuple field whose flag is given once per value (``--x A --x B``) rather than once for all (``--x A B``)
    repeat: bool = False
    #: turns the parsed value (never None) into the field's, e.g. "2G" into bytes; may raise CliplitError
    parse: Callable[[Any], Any] | None = None
    #: what the help says the default is, where the value alone would not say it well
    default_text: str | None = None


def setting(default: Any = _MISSING, help: str = "", *, default_factory: Any = _MISSING, **flag: Any) -> Any:
    """A dataclass field with its command-line presentation (``Flag``'s fields as keywords) in its metadata."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"cli": Flag(help, **flag)})


@dataclasses.dataclass(frozen=True)
class SettingsCli:
    """One settings dataclass as a command's flags: ``add_to(parser)`` then ``from_args(args)``.

    ``flags`` presents fields whose dataclass carries no ``cli`` metadata (it wins over the metadata); ``groups``
    maps the field that starts each help group to the group's title (fields keep the dataclass's order); ``exclude``
    names fields that are no flags (the command sets them itself).
    """

    settings: type
    flags: Mapping[str, Flag] = dataclasses.field(default_factory=dict)
    groups: Mapping[str, str] = dataclasses.field(default_factory=dict)
    exclude: frozenset[str] = frozenset()
    #: the metavar of fields of these types that have none (default: argparse's, the flag's name in capitals)
    type_metavars: Mapping[type, str] = dataclasses.field(default_factory=dict)

    def fields(self) -> list[dataclasses.Field]:
        """The settings' fields that are flags, in the dataclass's order."""
        return [item for item in dataclasses.fields(self.settings) if item.init and item.name not in self.exclude]

    def flag(self, name: str) -> Flag:
        """The presentation of field ``name``: the command's, else the field's metadata, else the plain default."""
        if name in self.flags:
            return self.flags[name]
        item = next(item for item in dataclasses.fields(self.settings) if item.name == name)
        return item.metadata.get("cli", Flag())

    def option_strings(self) -> dict[str, tuple[str, ...]]:
        """Field name -> its option strings (a positional's is its name)."""
        return {item.name: self.flag(item.name).names or (_option(item.name),) for item in self.fields()}

    def add_to(self, parser: argparse.ArgumentParser, *, suppress_defaults: bool = False) -> None:
        """One argument per field. ``suppress_defaults``: flags left out are absent from the parsed namespace (so
        that a config file's values can show through), instead of holding the field's default."""
        kinds = typing.get_type_hints(self.settings)
        target: argparse.ArgumentParser | argparse._ArgumentGroup = parser
        names = self.option_strings()
        for item in self.fields():
            if item.name in self.groups:
                target = _group(parser, self.groups[item.name])
            flag = self.flag(item.name)
            options = self._argument(item, flag, kinds[item.name], suppress_defaults)
            if not names[item.name][0].startswith("-"):
                options.pop("required", None)
            elif names[item.name] != (_option(item.name),):
                options["dest"] = item.name
            target.add_argument(*names[item.name], **options)

    def _argument(self, item: dataclasses.Field, flag: Flag, kind: Any, suppress: bool) -> dict[str, Any]:
        default = _default_of(item)
        kind, _ = _unwrap_optional(kind)
        options: dict[str, Any] = {"help": _help(flag, default)}
        if flag.required:
            options["required"] = True
        options["default"] = argparse.SUPPRESS if suppress else default
        if kind is bool and flag.type is None:
            negatable = flag.negatable if flag.negatable is not None else default is True
            options["action"] = argparse.BooleanOptionalAction if negatable else "store_true"
            if not negatable:
                options["help"] = flag.help  # "--x" turns it on: saying "(default: off)" adds nothing
            return options
        element = kind
        if typing.get_origin(kind) in (tuple, list):
            element = typing.get_args(kind)[0]
            if flag.repeat:
                options["action"] = "append"
                options["default"] = argparse.SUPPRESS if suppress else list(default)  # append needs a list
            else:
                options["nargs"] = "+"
        if flag.nargs is not None:
            options["nargs"] = flag.nargs
        options["type"] = flag.type or (element if element in (int, float, Path) else None)
        if options["type"] is None:
            options.pop("type")
        if flag.choices is not None:
            options["choices"] = flag.choices
        metavar = flag.metavar or (None if flag.choices else self.type_metavars.get(element))
        if metavar is not None:
            options["metavar"] = metavar
        return options

    def from_args(self, args: argparse.Namespace, **overrides: Any) -> Any:
        """The settings from parsed ``args``: each flag's value (parsed by its ``Flag.parse``; lists become tuples
        where the field is a tuple), ``overrides`` as given, and the dataclass's defaults for the rest."""
        given = vars(args)
        kinds = typing.get_type_hints(self.settings)
        values = dict(overrides)
        for item in self.fields():
            if item.name in overrides or item.name not in given:
                continue
            value = given[item.name]
            parse = self.flag(item.name).parse
            if parse is not None and value is not None and value != _default_of(item):  # text from the command line
                value = parse(value)
            elif isinstance(value, list) and typing.get_origin(_unwrap_optional(kinds[item.name])[0]) is tuple:
                value = tuple(value)
            values[item.name] = value
        return self.settings(**values)


def from_args(settings: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """``settings`` built from ``args`` as ``SettingsCli(settings).from_args`` does (presentation from metadata)."""
    return SettingsCli(settings).from_args(args, **overrides)


def _group(parser: argparse.ArgumentParser, title: str) -> argparse._ArgumentGroup:
    """The parser's group of this title, made if new: two settings classes can fill one group."""
    for group in parser._action_groups:
        if group.title == title:
            return group
    return parser.add_argument_group(title)


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def _default_of(item: dataclasses.Field) -> Any:
    if item.default is not _MISSING:
        return item.default
    if item.default_factory is not _MISSING:
        return item.default_factory()
    return None


def _unwrap_optional(kind: Any) -> tuple[Any, bool]:
    """``X`` of ``X | None`` (and whether it was optional)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in typing.get_args(kind):
        rest = [arg for arg in typing.get_args(kind) if arg is not type(None)]
        return (rest[0] if len(rest) == 1 else kind), True
    return kind, False


def _help(flag: Flag, default: Any) -> str:
    """The help with the default said once: not where the text already says it, a flag is required or there is no
    default to show (None); an empty text default means the option must be given."""
    text = flag.help
    if flag.default_text is not None:
        return f"{text} (default: {flag.default_text})".lstrip()
    if "default:" in text or flag.required or default is None or default in ((), []):
        return text
    if default == "":
        return f"{text} (required)".lstrip()
    if isinstance(default, bool):
        shown = "on" if default else "off"
    elif isinstance(default, tuple | list):
        shown = " ".join(str(value) for value in default)
    else:
        shown = str(default)
    return f"{text} (default: {shown.replace('%', '%%')})".lstrip()
