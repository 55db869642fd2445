"""The drawing page at / and the API docs at /docs, both working offline."""

from __future__ import annotations

import gzip
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Scope

__all__ = ["router", "STATIC_DIR", "mount_static"]

STATIC_DIR = Path(str(resources.files("digitrec.serve") / "static"))
_DOCS_ASSETS = "/docs-assets"

router = APIRouter(include_in_schema=False)

# Types the browser insists on (WebAssembly.instantiateStreaming needs application/wasm, a
# module import a JavaScript type), set here rather than left to the host's mime.types.
_STRICT_TYPES = {".wasm": "application/wasm", ".mjs": "text/javascript", ".js": "text/javascript"}


class _PageFiles(StaticFiles):
    """Static files with the types of :data:`_STRICT_TYPES` set whatever the system's tables say.

    A file kept only gzipped (``NAME.gz``: the runtime's 14 MB ``.wasm`` is 3.7 MB so) is served
    as ``NAME``: the gzipped bytes with ``Content-Encoding: gzip`` to a client that accepts it
    (every browser; it decodes them itself), else decompressed here.
    """

    async def get_response(self, path: str, scope: Scope) -> Response:
        if Path(path).suffix in _STRICT_TYPES and self.lookup_path(path)[1] is None:
            packed, stat_result = self.lookup_path(path + ".gz")
            if stat_result is not None and scope["method"] in ("GET", "HEAD"):
                return self._gzipped(packed, stat_result, Path(path).suffix, scope)
        return await super().get_response(path, scope)

    def _gzipped(self, packed: str, stat_result: Any, suffix: str, scope: Scope) -> Response:
        media = _STRICT_TYPES[suffix]
        accepts = Headers(scope=scope).get("accept-encoding", "")
        if "gzip" not in {part.split(";")[0].strip().lower() for part in accepts.split(",")}:
            return Response(gzip.decompress(Path(packed).read_bytes()), media_type=media,
                            headers={"vary": "accept-encoding"})
        response = super().file_response(packed, stat_result, scope)
        response.headers["content-type"] = media if media == "application/wasm" else f"{media}; charset=utf-8"
        if response.status_code == 200:
            response.headers["content-encoding"] = "gzip"
        response.headers["vary"] = "accept-encoding"
        return response

    def file_response(self, full_path: Any, stat_result: Any, scope: Scope, status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        media = _STRICT_TYPES.get(Path(str(full_path)).suffix)
        if media is not None and response.status_code == 200:
            response.media_type = media
            response.headers["content-type"] = media if media == "application/wasm" else f"{media}; charset=utf-8"
        return response


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


def _swagger_dir() -> Path | None:
    try:
        from swagger_ui_bundle import swagger_ui_path  # the `serve` extra ships Swagger UI's files
    except ImportError:
        return None
    path = Path(str(swagger_ui_path))
    return path if (path / "swagger-ui-bundle.js").is_file() else None


def mount_static(app: FastAPI) -> None:
    """Serve the page's files, and /docs from local Swagger UI files when they are installed."""
    app.mount("/static", _PageFiles(directory=STATIC_DIR), name="static")
    swagger = _swagger_dir()
    openapi_url = app.openapi_url or "/openapi.json"
    if swagger is not None:
        app.mount(_DOCS_ASSETS, StaticFiles(directory=swagger), name="docs-assets")
        kwargs: dict[str, Any] = {
            "swagger_js_url": f"{_DOCS_ASSETS}/swagger-ui-bundle.js",
            "swagger_css_url": f"{_DOCS_ASSETS}/swagger-ui.css",
            "swagger_favicon_url": f"{_DOCS_ASSETS}/favicon-32x32.png",
        }
    else:  # FastAPI's default: the browser fetches Swagger UI from a CDN (needs the internet)
        kwargs = {}

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=openapi_url, title=f"{app.title} - API docs", **kwargs)
