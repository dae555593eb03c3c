"""One settings object per program, and its command line, environment variables and config file made from it.

A program declares its settings once, as a frozen pydantic model whose fields carry a ``description`` (the
help text), a default and their rules. From that model :func:`add_arguments` adds one ``--kebab-case`` option
per field to an argparse parser, and :func:`resolve` builds the validated object from, in rising order of
precedence: the field defaults, a TOML config file (top-level keys are the field names), environment variables
(``PREFIX`` + the field name in upper case, e.g. ``HEMS_SUBSTEP_S``) and the command line. Every value goes
through the model's own validation; a bad one is refused with the option, variable or file key it came from,
the value and the rule (:class:`SettingsError`), and a key the model does not know is refused the same way.

It lives in ``protocol`` for the reason ``protocol.clock`` does: both programs (and the conformance suite) use
it and ``protocol`` is the one package all of them may import. Pure: the environment comes in as a mapping,
the file as a path; nothing here reads ``os.environ``.
"""

from __future__ import annotations

import argparse
import enum
import json
import tomllib
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, SecretStr, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


class SettingsError(ValueError):
    """Settings that cannot be used; ``problems`` holds one line per problem, each naming where the value came
    from (the option, the environment variable or the file and key), the value and the rule."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def option(name: str) -> str:
    """The command-line option of a field: ``substep_s`` -> ``--substep-s``."""
    return "--" + name.replace("_", "-")


def env_var(prefix: str, name: str) -> str:
    return prefix + name.upper()


def _choices(annotation: Any) -> list[str] | None:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return [str(a) for a in typing.get_args(annotation)]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _choices(args[0])
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(member.value) for member in annotation]
    return None


def _is_bool(annotation: Any) -> bool:
    return annotation is bool or (typing.get_origin(annotation) in (typing.Union, types.UnionType)
                                  and set(typing.get_args(annotation)) == {bool, type(None)})


_UNITS = (("_eur_per_kwh", "EUR/KWH"), ("_kwh", "KWH"), ("_kw", "KW"), ("_s", "S"), ("_h", "H"), ("_c", "°C"),
          ("_days", "DAYS"), ("_intervals", "N"), ("_bytes", "BYTES"), ("_pu", "PU"), ("_port", "PORT"),
          ("_path", "PATH"), ("_file", "FILE"), ("_time", "HH:MM"))


def _metavar(name: str) -> str:
    return next((unit for suffix, unit in _UNITS if name.endswith(suffix)), name.upper())


_SPELLED = "_settings_spelled"
"""Namespace attribute: which spelling of each option the command line used (see ``aliases``)."""


class _Store(argparse.Action):
    """argparse's ``store``, remembering the spelling the user typed, so a refusal names that one."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(namespace, self.dest, values)
        spelled = dict(getattr(namespace, _SPELLED, {}))
        spelled[self.dest] = option_string or option(self.dest)
        setattr(namespace, _SPELLED, spelled)


def add_arguments(parser: argparse.ArgumentParser | argparse._ArgumentGroup, model: type[BaseModel], *,
                  env_prefix: str, only: Collection[str] | None = None, exclude: Collection[str] = (),
                  aliases: Mapping[str, Sequence[str]] | None = None) -> None:
    """One option per field of ``model`` (those in ``only``, if given, but not in ``exclude``): help from its
    description, its default and its environment variable; booleans as ``--x`` / ``--no-x``. Options left out
    are absent from the namespace (``argparse.SUPPRESS``), so :func:`resolve` knows what the command line set.
    ``aliases`` maps a field to further spellings of its option (e.g. an older name kept working)."""
    aliases = aliases or {}
    unknown = set(aliases) - set(model.model_fields)
    if unknown:
        raise ValueError(f"aliases for fields {model.__name__} does not have: {', '.join(sorted(unknown))}")
    for name, field in model.model_fields.items():
        if name in exclude or (only is not None and name not in only):
            continue
        if not field.description:
            raise ValueError(f"{model.__name__}.{name} has no description: it is the option's help")
        default = "required" if field.is_required() else f"default {_shown(field.default)}"
        help_text = f"{field.description} ({default}; env {env_var(env_prefix, name)})".replace("%", "%%")
        spellings = [option(name), *aliases.get(name, ())]
        if _is_bool(field.annotation):
            parser.add_argument(*spellings, dest=name, action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=help_text)
            continue
        choices = _choices(field.annotation)
        parser.add_argument(*spellings, dest=name, action=_Store, default=argparse.SUPPRESS, choices=choices,
                            metavar=None if choices else _metavar(name), help=help_text)


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, SecretStr):
        return "set, not shown"
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    return str(value)


def resolve(model: type[ModelT], *, cli: Mapping[str, Any] | argparse.Namespace, env: Mapping[str, str],
            env_prefix: str, config_file: Path | None = None) -> ModelT:
    """The validated settings: defaults < ``config_file`` < ``env`` (variables ``env_prefix`` + FIELD) < ``cli``
    (the namespace of a parser made with :func:`add_arguments`; other attributes in it are ignored).
    Raises :class:`SettingsError` naming every bad value where it came from."""
    cli_values = vars(cli) if isinstance(cli, argparse.Namespace) else dict(cli)
    spelled: Mapping[str, str] = cli_values.get(_SPELLED, {})
    fields = model.model_fields
    values: dict[str, Any] = {}
    where: dict[str, str] = {}
    problems: list[str] = []
    if config_file is not None:
        try:
            data = tomllib.loads(Path(config_file).read_text(encoding="utf-8"))
        except OSError as error:
            raise SettingsError([f"{config_file}: cannot be read: {error.strerror or error}"]) from None
        except UnicodeDecodeError:
            raise SettingsError([f"{config_file}: is not UTF-8 text"]) from None
        except tomllib.TOMLDecodeError as error:
            raise SettingsError([f"{config_file}: is not valid TOML: {error}"]) from None
        for key, value in data.items():
            if key not in fields:
                problems.append(f"{config_file}: {key!r} is not a setting (known: {', '.join(sorted(fields))})")
                continue
            values[key], where[key] = value, f"{config_file}: {key}"
    for name in fields:
        variable = env_var(env_prefix, name)
        if variable in env:
            values[name], where[name] = env[variable], variable
    for name, value in cli_values.items():
        if name in fields:
            values[name], where[name] = value, spelled.get(name, option(name))
    if problems:
        raise SettingsError(problems)
    try:
        return model.model_validate(values)
    except ValidationError as error:
        secret = {name for name, field in fields.items() if _is_secret(field.annotation)}
        raise SettingsError([_problem(item, where, env_prefix, secret) for item in error.errors()]) from None


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def _problem(item: Mapping[str, Any], where: Mapping[str, str], env_prefix: str, secret: Collection[str] = ()
             ) -> str:
    location = item.get("loc") or ()
    message = str(item.get("msg", "invalid"))
    if not location:  # a rule over several settings
        return message.removeprefix("Value error, ")
    name = str(location[0])
    if item.get("type") == "missing":
        return (f"{option(name)} is required (or {env_var(env_prefix, name)}, or {name} in the config file)")
    source = where.get(name, f"{name} (default)")
    shown = "(value not shown)" if name in secret else repr(item.get("input"))
    return f"{source} {shown}: {message.removeprefix('Value error, ')}"


def config_text(settings: BaseModel) -> str:
    """``settings`` as a TOML config file for :func:`resolve` holds them: one ``name = value`` line per field;
    an unset optional one, and a secret (``SecretStr``, never printed), as a comment."""
    lines = []
    for name, value in settings.model_dump(mode="json").items():
        if isinstance(getattr(settings, name), SecretStr):
            lines.append(f"# {name} = (set, not shown)")
        elif value is None:
            lines.append(f"# {name} =")
        elif isinstance(value, bool):
            lines.append(f"{name} = {'true' if value else 'false'}")
        elif isinstance(value, int | float):
            lines.append(f"{name} = {value!r}")
        else:  # a JSON string is a TOML basic string (same escapes), but for DEL, which TOML wants escaped
            text = json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")
            lines.append(f"{name} = {text}")
    return "\n".join(lines)
