"""``digitrec serve``: the HTTP API and the drawing page; its flags are generated from ``ServeConfig``."""

from __future__ import annotations

import argparse

from digitrec.cli.common import Parents
from digitrec.cli.flags import add_config_flags, config_from
from digitrec.errors import ConfigError
from digitrec.serve.config import ServeConfig

__all__ = ["add_commands"]


def cmd_serve(args: argparse.Namespace) -> int:
    from digitrec.serve import MISSING_EXTRA

    config = config_from(args, ServeConfig, log_level="warning" if args.quiet else "info")
    try:
        import uvicorn  # noqa: F401

        from digitrec.serve.app import run
    except ModuleNotFoundError as exc:
        raise ConfigError(f"{MISSING_EXTRA} (missing module {exc.name})") from None
    run(config)
    return 0


def add_commands(sub: argparse._SubParsersAction, parents: Parents) -> None:
    """Register ``serve``."""
    p = sub.add_parser("serve", parents=[parents.common], help="serve the HTTP API and the drawing page",
                       description="Serve the HTTP API (/v1/predict, /v1/predict/batch, /v1/read, /v1/model, "
                       "/healthz, /metrics, /docs) and the drawing page at /. Needs the serve extra.")
    add_config_flags(p, ServeConfig)
    p.set_defaults(func=cmd_serve)
