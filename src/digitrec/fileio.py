"""Files on disk: atomic writes (a reader never sees a half-written file) and the per-user cache folder."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "check_writable", "cache_dir", "CACHE_DIR_ENV"]

CACHE_DIR_ENV = "DIGITREC_CACHE_DIR"  # overrides the per-user cache folder (downloads, compiled graphs)


def cache_dir(*parts: str) -> Path:
    """The per-user cache folder (``$DIGITREC_CACHE_DIR``, else the platform's user cache) joined with ``parts``."""
    root = os.environ.get(CACHE_DIR_ENV)
    if not root:
        import platformdirs

        root = platformdirs.user_cache_dir("digitrec")
    return Path(root).joinpath(*parts)


def _create_temp(target: Path) -> tuple[int, Path]:
    """Create an exclusive temporary file next to ``target``; mode 0666 minus the umask.

    Unlike ``tempfile.mkstemp`` (always 0600) the file gets the permissions a plain
    ``open()`` would give, without reading the process umask (which is not thread-safe).
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
            try:
                return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
            except FileExistsError:
                continue
        raise FileExistsError(f"no free temporary name next to {target}")
    except OSError as exc:
        # Report the user's path, not the temporary one.
        raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` in one rename.

    The temporary file lives in the target directory so that ``os.replace`` stays on one
    filesystem (and is therefore atomic). On any exception the temporary file is removed.
    OS errors name ``path``, not the temporary file.
    """
    target = Path(path)
    fd, tmp = _create_temp(target)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def check_writable(path: str | os.PathLike[str]) -> Path:
    """Fail now, with an ``OSError`` naming ``path``, if it could not be written later.

    Used before long work (training, evaluation) so that a bad output path does not cost the
    run. Creates missing parent folders, as writing would; refuses an existing directory.
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(21, "is a directory, not a file", str(target))
    fd, tmp = _create_temp(target)
    os.close(fd)
    os.unlink(tmp)
    return target
