"""The batch-reading settings (``BatchConfig``): where rows go, in which format, on how many processes or on Ray."""

from __future__ import annotations

from dataclasses import dataclass

from digitrec.cfg.base import option
from digitrec.errors import ConfigError

__all__ = ["BatchConfig", "BATCH_FORMATS", "BATCH_ENGINES"]

BATCH_FORMATS = ("jsonl", "csv")  # JSON Lines (one object per file) or CSV (one row per file, a header first)
BATCH_ENGINES = ("local", "ray")  # a process pool on this machine, or a Ray cluster (Ray Data)


@dataclass(frozen=True)
class BatchConfig:
    """How many image files are read in one run (``digitrec predict``/``read`` on folders and globs)."""

    out: str | None = option(None, "write one row per file to this file as the run goes (default: print "
                             "them)")
    format: str | None = option(None, "output format; default: csv for a .csv --out, else jsonl",
                                choices=BATCH_FORMATS)
    resume: bool = option(False, "continue an interrupted run: keep the rows already in --out and skip "
                          "their files")
    jobs: int | None = option(None, "worker processes (default: one per core; 1: this process only)", low=1)
    chunk_size: int = option(64, "files per task sent to a worker (and per write to --out)", low=1, high=4096)
    engine: str = option("local", "local: a process pool on this machine; ray: Ray Data on a Ray cluster",
                         choices=BATCH_ENGINES)
    address: str | None = option(None, "Ray cluster to join with --engine ray: auto (a 'ray start' on this "
                                 "machine) or HOST:PORT (default: start a local Ray)")

    def validate(self) -> None:
        """Raise :class:`ConfigError` for combinations that cannot work."""
        if self.format is not None and self.format not in BATCH_FORMATS:
            raise ConfigError(f"invalid format {self.format!r} (use {', '.join(BATCH_FORMATS)})")
        if self.engine not in BATCH_ENGINES:
            raise ConfigError(f"invalid engine {self.engine!r} (use {', '.join(BATCH_ENGINES)})")
        if self.resume and self.out is None:
            raise ConfigError("--resume needs --out (the file to continue)")
        if self.address is not None and self.engine != "ray":
            raise ConfigError("--address is for --engine ray")
        if self.jobs is not None and (isinstance(self.jobs, bool) or self.jobs < 1):
            raise ConfigError(f"jobs must be an integer >= 1, got {self.jobs!r}")
        if isinstance(self.chunk_size, bool) or not 1 <= self.chunk_size <= 4096:
            raise ConfigError(f"chunk size must be an integer from 1 to 4096, got {self.chunk_size!r}")

    def output_format(self) -> str:
        """The format rows are written in: ``format``, else from the suffix of ``out``."""
        if self.format is not None:
            return self.format
        return "csv" if self.out is not None and self.out.lower().endswith(".csv") else "jsonl"
