"""Tests for digitrec.train.loop: checks, the best weights kept, patience, and a resumed state."""

from __future__ import annotations

import torch
from torch import nn

from digitrec.train.loop import LoopState, run_loop


def _run(scores: list[float], **kwargs) -> tuple[LoopState, nn.Linear, list[int]]:
    """A loop whose step sets the weight to the step number and whose check reads the next score."""
    model = nn.Linear(1, 1, bias=False)
    steps_seen: list[int] = []

    def step(i: int) -> None:
        steps_seen.append(i)
        with torch.no_grad():
            model.weight.fill_(float(i))

    state = run_loop(iter(range(1, 100)), step, kwargs.pop("steps", 99), check_every=2,
                     check=lambda n: scores[n - 1], kept=model, **kwargs)
    return state, model, steps_seen


def test_the_best_check_is_kept_and_patience_stops() -> None:
    state, model, seen = _run([0.1, 0.5, 0.3, 0.2, 0.9], patience=2)
    assert state.checks == 4 and state.stopped  # two checks without beating 0.5
    assert state.best == 0.5 and state.best_check == 2 and seen == list(range(1, 9))
    assert state.best_state["weight"].item() == 4.0  # the weights after step 4, when check 2 ran
    assert model.weight.item() == 8.0  # the model itself goes on; the caller loads the best


def test_without_patience_the_run_goes_to_the_end_and_a_baseline_must_be_beaten() -> None:
    state, _, seen = _run([0.1, 0.2, 0.3], steps=6, state=LoopState(best=0.25))
    assert seen == list(range(1, 7)) and state.checks == 3 and not state.stopped
    assert state.best_check == 3 and state.best == 0.3


def test_a_stopped_state_runs_nothing_and_checks_continue_their_count() -> None:
    state, _, seen = _run([0.1], state=LoopState(stopped=True))
    assert seen == [] and state.checks == 0
    resumed = LoopState(checks=2, best=0.4, best_check=1, bad=1)
    state, _, _ = _run([9, 9, 0.1, 0.2], steps=4, state=resumed, patience=2)
    assert state.checks == 3 and state.stopped and state.best_check == 1  # one more check without beating 0.4
