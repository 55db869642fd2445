"""The one training loop every model trains with: steps over batches, a check every so often, the best weights kept.

What a step does (the loss, the optimiser, the schedule) and what a check measures are the
caller's: the digit classifiers (:func:`digitrec.train.engine.fit`) check once an epoch on
their validation split, the line readers (:func:`digitrec.train.lines.fit_ctc`) once an epoch
of fine-tuning or never. The loop keeps the best-scoring weights and stops after ``patience``
checks without a better score; its :class:`LoopState` is all a resumed run needs to go on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from digitrec.train.optim import snapshot

__all__ = ["LoopState", "run_loop"]

B = TypeVar("B")


@dataclass
class LoopState:
    """Where a run stands: what checks said and which weights are the best so far."""

    checks: int = 0  # checks done (one an epoch for epoch-based training)
    best: Any = None  # the best check's score so far, compared with > (None: nothing to beat)
    best_check: int = 0  # the check those weights come from (0: the starting weights)
    best_state: dict[str, torch.Tensor] | None = None  # those weights
    bad: int = 0  # checks since the best one
    stopped: bool = False  # patience ran out


def run_loop(batches: Iterable[B], step: Callable[[B], None], steps: int, *, check_every: int = 0,
             check: Callable[[int], Any] | None = None, kept: nn.Module | None = None, keep_best: bool = True,
             patience: int = 0, state: LoopState | None = None,
             after_check: Callable[[LoopState, Any], None] | None = None) -> LoopState:
    """Run ``step`` on at most ``steps`` batches; every ``check_every`` steps, score with ``check``.

    ``check(n)`` gets the check's number (continuing ``state.checks`` on a resumed run) and
    returns a comparable score. With ``keep_best``, a score better than ``state.best`` keeps a
    copy of ``kept``'s weights; ``patience`` checks in a row without one stop the run.
    ``after_check(state, score)`` runs after every check (checkpointing, progress).
    """
    state = state if state is not None else LoopState()
    if state.stopped:
        return state
    for done, batch in enumerate(batches):
        if done == steps:
            break
        step(batch)
        if check is None or not check_every or (done + 1) % check_every:
            continue
        state.checks += 1
        score = check(state.checks)
        if keep_best:
            if state.best is None or score > state.best:
                assert kept is not None, "keep_best needs the module whose weights to keep"
                state.best, state.best_check, state.best_state, state.bad = score, state.checks, snapshot(kept), 0
            else:
                state.bad += 1
                state.stopped = bool(patience) and state.bad >= patience
        if after_check is not None:
            after_check(state, score)
        if state.stopped:
            break
    return state
