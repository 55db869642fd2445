"""Command-line flags generated from a config dataclass: one flag per field, help and bounds from the field.

A field declared with :func:`digitrec.cfg.option` becomes ``--field-name``; its type, range,
choices and help come from the declaration, and its default is shown once, from the config.
The flag's own default is None ("not given"), so :func:`config_from` passes on only what the
user typed and the config (or a preset) keeps its defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

from digitrec.cli.common import float_in, int_at_least

__all__ = ["add_config_flags", "given_fields", "config_from"]

_TYPES = {"int": int, "float": float, "str": str, "bool": bool}


def _kind(f: dataclasses.Field) -> type:
    # Annotations are strings here (postponed evaluation); "float | None" is a float flag.
    return _TYPES.get(str(f.type).removesuffix(" | None"), str)


def _flag_fields(config_class: type, skip: Sequence[str]) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(config_class) if f.metadata.get("flag") and f.name not in skip]


def add_config_flags(parser: argparse.ArgumentParser, config_class: type, *, skip: Sequence[str] = (),
                     default_label: str = "default", defaults: Any = None) -> None:
    """Add a flag per command-line field of ``config_class`` (fields marked ``flag=False`` and ``skip`` are left out).

    ``defaults`` (an instance) supplies the values shown in the help, labelled ``default_label``
    (e.g. ``notebook`` for the train presets); without it the class defaults are shown.
    """
    for f in _flag_fields(config_class, skip):
        meta = f.metadata
        flag = meta.get("name") or "--" + f.name.replace("_", "-")
        shown = getattr(defaults, f.name) if defaults is not None else f.default
        help_text = meta["help"].replace("%", "%%")
        if shown is not None and shown is not dataclasses.MISSING:
            help_text += f" ({default_label}: {shown})"
        kind = _kind(f)
        if kind is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
            continue
        options: dict[str, Any] = {"dest": f.name, "default": None, "help": help_text}
        if meta.get("choices"):
            options["choices"] = meta["choices"]
        elif kind is int:
            low = meta.get("low")
            options.update(type=int_at_least(int(low) if low is not None else -(2**63),
                                             None if meta.get("high") is None else int(meta["high"])), metavar="N")
        elif kind is float:
            options.update(type=float_in(meta.get("low"), meta.get("high"), meta.get("above")), metavar="X")
        else:
            options["metavar"] = "NAME"
        parser.add_argument(flag, **options)


def given_fields(args: argparse.Namespace, config_class: type) -> dict[str, Any]:
    """The fields of ``config_class`` the user gave a flag for, with their values."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(config_class)
            if f.metadata.get("flag") and getattr(args, f.name, None) is not None}


def config_from(args: argparse.Namespace, config_class: type, **fixed: Any) -> Any:
    """``config_class`` built from its defaults, the flags given, then ``fixed`` (values the command sets)."""
    return config_class(**{**given_fields(args, config_class), **fixed})
