"""Data-parallel training on torch.distributed: joining torchrun's process group, its collectives, launching ranks.

A run is N copies of ``digitrec train`` (ranks), started by ``torchrun`` or by
``digitrec train --nproc N`` (which calls torchrun's own entry point, ``torch.distributed.run``).
Each rank joins the group from the environment torchrun exports (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``): gloo on CPU, NCCL on CUDA with one GPU per
local rank. Multi-node rendezvous is torchrun's (``--nnodes``, ``--rdzv-*`` flags), not ours.
Only tensors travel between ranks (no pickled objects).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as tdist

from digitrec.errors import ConfigError, DistributedError, first_line

__all__ = [
    "Dist", "RANK_ENV", "LAUNCHED_ENV", "in_torchrun", "join", "free_port", "rank_threads", "launch", "is_peer_error",
]

RANK_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")  # what torchrun exports to each rank
LAUNCHED_ENV = "DIGITREC_DDP_LAUNCHER"  # set for ranks started by `digitrec train --nproc`: it reports failures

# gloo reports a vanished peer as a plain RuntimeError ("Connection reset by peer", "Connection
# closed by peer"); NCCL and the store raise DistError subclasses.
_PEER_MARKS = ("gloo", "nccl", "connection", "socket", "timed out", "broken pipe")


def is_peer_error(exc: BaseException) -> bool:
    """True for the error a collective raises when another rank is gone or the group timed out."""
    if isinstance(exc, getattr(tdist, "DistError", ())):
        return True
    return isinstance(exc, RuntimeError) and any(mark in str(exc).lower() for mark in _PEER_MARKS)


@dataclass(frozen=True)
class Dist:
    """This process's place in a data-parallel run, and the few collectives training needs."""

    rank: int  # 0 .. world - 1; rank 0 validates, tests, reports and writes files
    world: int  # processes in the run, over all nodes
    local_rank: int  # index on this node (the GPU it uses on CUDA)
    local_world: int  # processes on this node (they share its cores)
    device: torch.device  # where this rank computes

    @property
    def is_main(self) -> bool:
        """True on rank 0."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        if self.device.type == "cuda":
            tdist.barrier(device_ids=[self.device.index or 0])
        else:
            tdist.barrier()

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the ranks, in place (on this rank's device)."""
        tdist.all_reduce(tensor, op=tdist.ReduceOp.SUM)
        return tensor

    def broadcast_floats(self, values: Sequence[float] | None, count: int) -> list[float] | None:
        """Rank 0's ``count`` floats (or None) on every rank."""
        buf = torch.zeros(count + 1, dtype=torch.float64, device=self.device)
        if self.is_main and values is not None:
            buf[0] = 1.0
            buf[1:] = torch.tensor(list(values), dtype=torch.float64)
        tdist.broadcast(buf, src=0)
        return buf[1:].tolist() if buf[0].item() else None

    def broadcast_bytes(self, blob: bytes | None) -> bytes | None:
        """Rank 0's ``blob`` (or None) on every rank: a checkpoint read on rank 0 only."""
        size = torch.tensor([-1 if blob is None else len(blob)], dtype=torch.int64, device=self.device)
        tdist.broadcast(size, src=0)
        n = int(size.item())
        if n < 0:
            return None
        if self.is_main:
            assert blob is not None
            data = torch.frombuffer(bytearray(blob), dtype=torch.uint8).to(self.device) if n else \
                torch.empty(0, dtype=torch.uint8, device=self.device)
        else:
            data = torch.empty(n, dtype=torch.uint8, device=self.device)
        tdist.broadcast(data, src=0)
        return bytes(data.cpu().numpy().tobytes()) if not self.is_main else blob

    def gather_states(self, state: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Every rank's ``state`` (same keys and shapes on all ranks, e.g. RNG states), in rank order."""
        out: list[dict[str, torch.Tensor]] = [{} for _ in range(self.world)]
        for key in sorted(state):
            local = state[key].to(self.device)
            parts = [torch.empty_like(local) for _ in range(self.world)]
            tdist.all_gather(parts, local)
            for r, part in enumerate(parts):
                out[r][key] = part.cpu()
        return out

    def close(self) -> None:
        """Leave the process group."""
        if tdist.is_initialized():
            tdist.destroy_process_group()


def in_torchrun() -> bool:
    """True when this process is a rank started by torchrun (its environment is set)."""
    return all(key in os.environ for key in RANK_ENV)


def join(device: str = "auto", *, timeout_s: float = 1800.0) -> Dist:
    """Join the process group torchrun set up: NCCL on CUDA (GPU ``LOCAL_RANK``), gloo on CPU.

    ``device`` is ``auto`` (CUDA when there is one), ``cpu`` or ``cuda`` (a GPU index is not
    allowed: each rank takes the one of its local rank). Raises :class:`DistributedError` when
    the group cannot be formed within ``timeout_s`` (which also bounds every later collective).
    """
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ["LOCAL_RANK"])
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    except (KeyError, ValueError) as exc:
        raise DistributedError(f"not started by torchrun, or its environment is broken ({exc})") from exc
    if device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"distributed training takes --device auto, cpu or cuda (each rank uses the GPU of its "
                          f"local rank), got {device!r}")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but CUDA is not available")
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} on this node); "
                              "start at most one process per GPU")
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    else:
        dev = torch.device("cpu")
    try:
        tdist.init_process_group("nccl" if use_cuda else "gloo", rank=rank, world_size=world,
                                 timeout=timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as exc:  # DistError is a RuntimeError
        raise DistributedError(f"rank {rank}: cannot join the process group at "
                               f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} "
                               f"({first_line(exc)})") from exc
    return Dist(rank=rank, world=world, local_rank=local_rank, local_world=local_world, device=dev)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (for the rendezvous of a one-node run)."""
    import socket

    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def rank_threads(local_world: int) -> int:
    """Torch threads for one of ``local_world`` ranks sharing this node's cores (at least 1)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, local_world))


def launch(nproc: int, argv: Sequence[str], *, master_addr: str = "127.0.0.1", master_port: int = 29500) -> int:
    """Run ``python -m digitrec ARGV`` as ``nproc`` ranks on this node through torchrun's own entry point.

    Returns 0 when every rank succeeded, or the exit status of a rank that failed after printing
    its own error line; Ctrl-C is a KeyboardInterrupt, as in one process. Raises
    :class:`DistributedError` (one line) when the ranks cannot be started, or a rank died without
    saying why (killed by a signal, an unexpected exit status).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    if nproc < 1:
        raise ConfigError(f"--nproc must be >= 1, got {nproc}")
    args = ["--nnodes", "1", "--nproc-per-node", str(nproc), "--rdzv-backend", "static", "--node-rank", "0",
            "--master-addr", master_addr, "--master-port", str(master_port), "--max-restarts", "0",
            "--monitor-interval", "0.1", "-m", "digitrec", *argv]
    env = {LAUNCHED_ENV: "1", "OMP_NUM_THREADS": str(rank_threads(nproc))}
    with _environ(env), _quiet_torchrun():
        try:
            torchrun(args)
        except ChildFailedError as exc:
            return _child_failure(exc)
        except SignalException as exc:  # Ctrl-C or SIGTERM reached the agent; it has stopped the ranks
            raise KeyboardInterrupt from exc
        except (Exception, SystemExit) as exc:  # rendezvous, store or agent start-up failures
            raise DistributedError(f"cannot start {nproc} training processes on {master_addr}:{master_port} "
                                   f"({first_line(exc)})") from exc
    return 0


def _child_failure(exc: BaseException) -> int:
    # A rank that exits with 1 has printed its own error line (or lost contact with the one that
    # did, and kept quiet); anything else died without a word and is reported here.
    # The agent stops the other ranks with SIGTERM once one fails: that signal is a consequence,
    # unless it is all there is (the whole run was stopped).
    failures = getattr(exc, "failures", {}) or {}
    codes = {rank: int(f.exitcode) for rank, f in failures.items()}
    for rank in sorted(codes):
        if codes[rank] < 0 and (codes[rank] != -signal.SIGTERM or all(c == -signal.SIGTERM for c in codes.values())):
            raise DistributedError(f"distributed training failed: rank {rank} (pid {failures[rank].pid}) was "
                                   f"killed by signal {failures[rank].signal_name()}; no model file written") from exc
    for rank in sorted(codes):
        if codes[rank] > 1:
            return codes[rank]
    return 1


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    # The ranks inherit the launcher's environment; set ours for them, put it back after.
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _quiet_torchrun() -> Iterator[None]:
    # The elastic agent logs a report per failure; our one line replaces it.
    logger = logging.getLogger("torch.distributed")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
