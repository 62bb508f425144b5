"""benchmarks/critic_rejection.py: which of the critic's candidates are kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import load_benchmark


@pytest.fixture
def keep_best(monkeypatch: pytest.MonkeyPatch):
    # the script imports its neighbour sampler_bound.py, as it does when run from benchmarks/
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    return load_benchmark("critic_rejection").keep_best


def test_keeping_all_is_the_mixture_as_drawn(keep_best) -> None:
    scores = np.array([0.0, 5.0, 1.0, 9.0, 3.0, 2.0, 8.0, 7.0])
    np.testing.assert_array_equal(keep_best(scores, 4, 1.0), [0, 1, 2, 3])


def test_keeps_the_highest_scores_among_the_first_n_over_f(keep_best) -> None:
    scores = np.array([0.0, 5.0, 1.0, 9.0, 3.0, 2.0, 8.0, 7.0, 100.0])
    # half kept: 4 of the first 8, never the 9th candidate however high its score
    assert sorted(keep_best(scores, 4, 0.5).tolist()) == [1, 3, 6, 7]


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_a_fraction_outside_0_1_is_refused(keep_best, fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction"):
        keep_best(np.zeros(8), 4, fraction)


def test_too_few_candidates_is_refused(keep_best) -> None:
    with pytest.raises(ValueError, match="needs 16 candidates, got 8"):
        keep_best(np.zeros(8), 4, 0.25)
