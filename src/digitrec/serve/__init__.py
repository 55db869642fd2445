"""The HTTP service and drawing page (``digitrec serve``); needs the ``serve`` extra.

>>> from digitrec.serve import ServeConfig, create_app
>>> app = create_app(ServeConfig(model="seed"))   # an ASGI app: run it with any ASGI server
"""

from __future__ import annotations

from digitrec.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app", "run", "MISSING_EXTRA"]

MISSING_EXTRA = "the HTTP server needs the serve extra: pip install 'digitrec[serve]'"


def __getattr__(name: str):  # imports the web stack only when the app is asked for
    if name in ("create_app", "run"):
        from digitrec.serve import app

        return getattr(app, name)
    raise AttributeError(name)
