"""The command line speaks one language: one name per concept, real choices, metavars that
say what a value is, no one-letter long options, help that names only what exists."""

from __future__ import annotations

import re
from collections.abc import Iterator
from enum import Enum
from typing import Any

import pytest
import typer.main

from hostkit.cli import app

# concepts that once had several names; only the first is allowed now
RETIRED = {"--dir": "--deploy-dir", "--stack-dir": "--deploy-dir", "--server-name": "--hostname",
           "--json": "--format json"}
FLAG_TYPES = ("BOOL", "BOOLEAN")


def _commands() -> Iterator[tuple[str, Any]]:
    root = typer.main.get_command(app)

    def walk(prefix: str, command: Any) -> Iterator[tuple[str, Any]]:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                yield from walk(f"{prefix} {name}".strip(), sub)
        else:
            yield prefix, command

    yield from walk("", root)


def _options() -> Iterator[tuple[str, Any]]:
    for name, command in _commands():
        for param in command.params:
            if param.param_type_name == "option" and not param.hidden and param.name != "help":
                yield name, param


def test_every_command_is_walked() -> None:
    names = {name for name, _command in _commands()}
    assert {"doctor", "bootstrap", "stack up", "users list", "certs", "facts"} <= names


@pytest.mark.parametrize(("command", "option"), [
    (name, opt) for name, param in _options() for opt in param.opts + param.secondary_opts])
def test_long_options_are_words_and_retired_names_are_gone(command: str, option: str) -> None:
    if option.startswith("--"):
        assert len(option) > 3, f"{command}: one-letter long option {option}"
    assert option not in RETIRED, f"{command}: {option} is now {RETIRED.get(option)}"


def _is_choice(param: Any) -> bool:
    """An enum option (the parser lists its choices itself), on old and new typer alike."""
    if getattr(getattr(param, "type", None), "choices", None):
        return True
    descriptor = getattr(param, "type_descriptor", None)
    annotation = getattr(descriptor, "annotation", None)
    return isinstance(annotation, type) and issubclass(annotation, Enum)


def test_every_value_option_says_what_its_value_is() -> None:
    vague = []
    for command, param in _options():
        if param.is_flag or param.count or _is_choice(param):
            continue
        if not param.metavar:
            vague.append(f"{command} {param.opts[0]}")
    assert vague == []


def test_the_deploy_directory_has_one_name_everywhere() -> None:
    dirs = {(command, param.opts[0]) for command, param in _options()
            if param.name in ("directory", "deploy_dir", "stack_dir")}
    assert dirs
    assert {opt for _command, opt in dirs} == {"--deploy-dir"}


def test_help_names_only_choices_that_exist() -> None:
    for command, param in _options():
        for match in re.finditer(r"--package-set[= ](\w+)", param.help or ""):
            assert match.group(1) in ("full", "slim"), f"{command}: {param.help}"


def test_every_option_says_what_it_does() -> None:
    """On every supported typer (Python 3.9's takes an older one), help reaches the parser."""
    silent = [f"{command} {param.opts[0]}" for command, param in _options() if not param.help]
    assert silent == []
