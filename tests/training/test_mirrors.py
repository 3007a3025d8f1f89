"""Whether feature extraction's second pass of the backbone (the mirror images) is expected to pay."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import tl_core.training.mirrors as mirrors
from tl_core.features import MIRRORED, ORIGINAL, TURNED_VIEWS


def _run_with_validation(right: int, wrong: int, monkeypatch: pytest.MonkeyPatch, views=(MIRRORED,)):
    """A run whose first head gets ``right`` validation images right and ``wrong`` ones wrong (the head answers from a canned table)."""
    count = right + wrong
    labels = np.zeros(count, dtype=int)
    answers = np.zeros((count, 2))
    answers[:right, 0] = 1.0
    answers[right:, 1] = 1.0
    monkeypatch.setattr(mirrors, "split_rows", lambda run: ({"val": np.arange(count)}, {"val": labels}))
    head = SimpleNamespace(predict=lambda features, **keywords: answers[features[:, 0].astype(int)])
    config = SimpleNamespace(extra_feature_views=list(views))
    return SimpleNamespace(model=SimpleNamespace(head=head), features={ORIGINAL: np.arange(count, dtype=float)[:, None]}, config=config)


@pytest.mark.parametrize(
    ("right", "wrong", "pays"),
    [
        (295, 5, False),  # cats_dogs: 0.4 points expected (0.1 measured) are not worth a second pass
        (30, 7, True),  # ants_bees: 4 points expected
        (37, 0, True),  # a few validation images all right: one error more is still likely, and worth a point
        (2000, 0, False),  # thousands all right: nothing left to fix
        (380, 40, True),  # aerial-like: 2 points expected
    ],
)
def test_the_mirror_images_run_only_where_a_fifth_of_the_errors_is_worth_half_a_point(right, wrong, pays, monkeypatch) -> None:
    decided, why = mirrors.mirrors_pay(_run_with_validation(right, wrong, monkeypatch))
    assert decided is pays
    assert f"gets {right} of {right + wrong} validation images right" in why
    assert why.startswith("Mirror images skipped") is not pays


@pytest.mark.parametrize(("right", "wrong", "pays"), [(380, 40, True), (295, 5, False)])
def test_with_turns_the_same_pass_adds_the_turned_views_and_says_so(right, wrong, pays, monkeypatch) -> None:
    run = _run_with_validation(right, wrong, monkeypatch, views=(MIRRORED, *TURNED_VIEWS))
    decided, why = mirrors.mirrors_pay(run)
    assert decided is pays
    assert ("averages all 8 views" in why) is pays and ("Mirror images and turned views skipped" in why) is not pays
    assert mirrors.extra_views_words(run) == "mirror images and turned views"
