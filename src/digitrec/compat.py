"""Import paths: old flat ones (``digitrec.predict``, ...) resolve to the new homes; packages export names lazily."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

__all__ = ["MOVED", "install", "lazy_exports"]

# Old module -> where it lives now. ``evaluate``, ``finetune`` and ``train`` are left out: they are
# also public functions of ``digitrec``, and importing a submodule of that name would rebind them.
MOVED = {
    "augment": "digitrec.data.augment",
    "calibrate": "digitrec.train.calibrate",
    "checkpoint": "digitrec.models.checkpoint",
    "ensemble": "digitrec.models.ensemble",
    "lineprep": "digitrec.read.lineprep",
    "linereader": "digitrec.read.linereader",
    "numbers": "digitrec.read.segment",
    "paper": "digitrec.data.paper",
    "predict": "digitrec.infer.recogniser",
    "preprocess": "digitrec.data.preprocess",
    "presets": "digitrec.cfg.presets",
    "synthetic": "digitrec.data.synthetic",
    "trainstate": "digitrec.train.resume",
    "verifier": "digitrec.read.verifier",
}


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``digitrec.<old>`` and hands back the module at its new path (the same object)."""

    def __init__(self) -> None:
        self._own_specs: dict[str, importlib.machinery.ModuleSpec] = {}

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        package, _, name = fullname.rpartition(".")
        if package != "digitrec" or name not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        new = MOVED[spec.name.rpartition(".")[2]]
        warnings.warn(f"{spec.name} moved to {new}; the old path will be removed", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(new)
        self._own_specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # Already executed at its new path; the import system has just stamped the old path's
        # spec on it, so give it back its own (reloads and tools read it).
        module.__spec__ = self._own_specs.pop(module.__spec__.name)


def install() -> None:
    """Let old import paths work (idempotent); called once by ``digitrec/__init__``."""
    if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
        sys.meta_path.append(_MovedModules())


def lazy_exports(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose public ``names`` (name -> defining module) load on
    first use (PEP 562): importing the package stays cheap, PyTorch loads only with what needs it."""

    def __getattr__(name: str) -> Any:
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(names))

    return __getattr__, __dir__
