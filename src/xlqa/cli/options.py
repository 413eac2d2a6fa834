"""Command-line options made from the config dataclasses: one source of every default and help text.

`config_command` turns a config class of :mod:`xlqa.config` into a typer command whose options are the
class's fields (``--max-seq-length`` for ``max_seq_length``), with the field's help, default and ``choices``;
``bool`` fields become ``--x/--no-x`` switches. A command adds its own options (``--name``, ``--detach``) and
positional arguments, and its body receives the config built from the flags.
"""

from __future__ import annotations

import enum
import inspect
import json
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import MISSING, Field, fields
from pathlib import Path
from typing import Annotated, Any

import typer

from xlqa.errors import ConfigError


def _plain(tp: Any) -> Any:
    """``X | None`` -> ``X`` for the click type (None stays the default)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _default(f: Field) -> Any:
    if f.default is not MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not MISSING else None


def field_parameter(
    f: Field, tp: Any, *, argument: bool = False, required: bool = False
) -> inspect.Parameter:
    """The typer parameter of one config field."""
    meta = f.metadata
    flag = meta.get("flag") or f.name.replace("_", "-")
    help_text = meta.get("help", "")
    if required:  # the command line prints its own [required]
        help_text = help_text.replace(" [required]", "")
    default = _default(f)
    kw: dict[str, Any] = {"help": help_text}
    choices = meta.get("choices")
    plain = _plain(tp)
    if choices:  # an Enum shows the choices in the help and rejects other values with a clear message
        tp = plain = enum.Enum(f.name.title().replace("_", ""), [(c, c) for c in choices], type=str)
        default = plain(default)
    if typing.get_origin(plain) is list:
        annotation, default = list[typing.get_args(plain)[0]] | None, None  # repeat the flag; None -> default
        kw["metavar"] = "<str>"
    else:
        annotation = tp
    if argument:
        info = typer.Argument(help=help_text, show_default=False)
        return inspect.Parameter(
            f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Annotated[plain, info]
        )
    decls = [f"--{flag}/--no-{flag}"] if plain is bool else [f"--{flag}"]
    show = default is True if plain is bool else default not in (None, "", [])
    info = typer.Option(*decls, show_default=show, **kw)
    return inspect.Parameter(
        f.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=... if required else default,
        annotation=Annotated[annotation, info],
    )


def config_parameters(
    cls: type, *, skip: Iterable[str] = (), arguments: Iterable[str] = (), required: Iterable[str] = ()
) -> list[inspect.Parameter]:
    """Parameters for the command-line fields of ``cls`` (``cli=False`` fields and ``skip`` left out)."""
    hints = typing.get_type_hints(cls)
    skip, arguments, required = set(skip), list(arguments), set(required)
    by_name = {f.name: f for f in fields(cls)}
    params = [field_parameter(by_name[n], hints[n], argument=True) for n in arguments]
    for f in fields(cls):
        if f.name in skip or f.name in arguments or not f.metadata.get("cli", True):
            continue
        params.append(field_parameter(f, hints[f.name], required=f.name in required))
    return params


def option(name: str, tp: Any, default: Any, help: str, *decls: str) -> inspect.Parameter:
    """A command's own option (not a config field)."""
    flag = name.replace("_", "-")
    decls = decls or ((f"--{flag}/--no-{flag}",) if tp is bool else (f"--{flag}",))
    info = typer.Option(*decls, help=help, show_default=default not in (None, False, ""))
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[tp, info]
    )


def load_config(cls, path: str | Path | None, overrides: dict[str, Any]):
    """Build ``cls`` from defaults, then a JSON config file, then explicit overrides (CLI flags that were set)."""
    values: dict[str, Any] = {}
    if path:
        try:
            values.update(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise ConfigError(f"config file {path}: {err}") from err
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{path or 'config'}: unknown keys {unknown}; valid keys: {sorted(known)}")
    return cls(**values)


def build_config(
    cls: type, values: dict[str, Any], config_file: str | None = None, ctx: typer.Context | None = None
) -> Any:
    """The config from the flags; with ``config_file`` (and the command's ``ctx``), the file's values
    overridden by the flags typed on the command line."""
    names = {f.name for f in fields(cls)}
    values = {k: v.value if isinstance(v, enum.Enum) else v for k, v in values.items() if k in names}
    for f in fields(cls):  # a repeatable flag not given: the field's default
        if f.name in values and values[f.name] is None and isinstance(_default(f), list):
            values[f.name] = _default(f)
    if config_file is None:
        return cls(**values)
    typed = {k: v for k, v in values.items() if ctx.get_parameter_source(k).name != "DEFAULT"}
    return load_config(cls, config_file, typed)


def config_command(
    app: typer.Typer,
    name: str,
    body: Callable[..., None],
    parameters: list[inspect.Parameter],
    *,
    help: str,
) -> None:
    """Register ``body(**values)`` as command ``name`` with ``parameters`` (see :func:`config_parameters`)."""

    wants_ctx = "ctx" in inspect.signature(body).parameters

    def command(ctx: typer.Context, **values: Any) -> None:
        body(**values, **({"ctx": ctx} if wants_ctx else {}))

    ctx_param = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
    params = [ctx_param, *sorted(parameters, key=lambda p: p.kind)]  # arguments before keyword-only options
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = help
    command.__name__ = name.replace("-", "_")
    app.command(name)(command)
