"""Measured advice: the combination rule at its edges, and real measurements on real and dissimilar data."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from tl_core.advice.advise import advise, freeze_depth_from_shift
from tl_core.advice.candidates import (
    FAMILIAR_SIMILARITY,
    FINE_TUNE_ERROR_CUT,
    TURNED_COPIES_CUT,
    UNFAMILIAR_SPAN,
    Candidate,
    _with_recommendation,
    expected_fine_tune_accuracy,
    extension_words,
    fine_tune_error_cut,
    unfamiliarity,
)
from tl_core.advice.compare import ComparisonRow, best_row
from tl_core.advice.similarity import (
    HIGH_SIMILARITY_THRESHOLD,
    SHIFT_GROWTH_THRESHOLD,
    LayerShift,
    combine,
    confidence_similarity,
    extrapolated_accuracy,
    probe_similarity,
    shift_similarity,
)
from tl_core.cli import main
from tl_core.config import TrainConfig
from tl_core.data.sample import write_sample_dataset
from tl_core.models.backbones import get_backbone
from tl_core.models.blocks import default_freeze_layers

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# --------------------------------------------------------------------------- the rule, at its edges


def test_probe_similarity_edges() -> None:
    assert probe_similarity(0.95, 0.70) == pytest.approx(0.25 / 0.30)
    assert probe_similarity(0.60, 0.70) == 0.0  # pretrained worse than random: no transfer
    assert probe_similarity(1.0, 1.0) == 0.0  # random features already perfect: nothing to win
    assert probe_similarity(1.0, 0.5) == 1.0


def test_shift_and_confidence_mappings() -> None:
    assert shift_similarity(0.0) == 1.0
    assert shift_similarity(0.35) == pytest.approx(math.exp(-1))
    assert shift_similarity(-0.1) == 1.0
    assert confidence_similarity(None) is None
    assert confidence_similarity(0.15) == 0.0 and confidence_similarity(0.10) == 0.0
    assert confidence_similarity(0.65) == 1.0 and confidence_similarity(0.90) == 1.0
    assert confidence_similarity(0.40) == pytest.approx(0.5)


def test_combination_threshold() -> None:
    assert combine({"probe": 0.5, "shift": 0.5}) == (0.5, "high")
    assert combine({"probe": 0.4999, "shift": 0.4999})[1] == "low"
    assert combine({"probe": 1.0, "shift": 0.0, "confidence": 0.2}) == (pytest.approx(0.4), "low")
    assert HIGH_SIMILARITY_THRESHOLD == 0.5
    with pytest.raises(ValueError, match="No similarity component was measured"):
        combine({})


def test_freeze_depth_follows_the_shift_profile() -> None:
    spec = get_backbone("vgg16")
    names = ["input"] + [f"block{block}_conv{conv}" for block in range(1, 6) for conv in (1, 2)]  # 5 blocks of 2 layers after the input
    calm = [LayerShift(index, names[index], 0.1) for index in range(1, 11)]
    # Nothing moves: the usual depth, the last third of the blocks retrain (the same as default_freeze_layers).
    assert freeze_depth_from_shift(calm, names, spec, "large")[:2] == (7, "block4") == (default_freeze_layers(spec, names), "block4")
    late = [LayerShift(index, names[index], 0.1 if index < 9 else 1.0) for index in range(1, 11)]
    depth, block, why = freeze_depth_from_shift(late, names, spec, "large")
    assert (depth, block) == (7, "block4") and "the last third of the blocks retrain at least" in why  # a late shift never freezes more
    moved = [LayerShift(index, names[index], 0.1 if index < 5 else SHIFT_GROWTH_THRESHOLD + 0.1) for index in range(1, 11)]
    depth, block, why = freeze_depth_from_shift(moved, names, spec, "large")
    assert (depth, block) == (5, "block3") and "first exceeds 0.35 at layer 'block3_conv1'" in why
    early = [LayerShift(index, names[index], 1.0) for index in range(1, 11)]
    assert freeze_depth_from_shift(early, names, spec, "large")[:2] == (1, "block1")
    small = freeze_depth_from_shift(early, names, spec, "small")
    assert small[:2] == (3, "block2") and "first third of the blocks stays frozen" in small[2]


def _candidate(strategy: str, accuracy: float | None, seconds: float, within: bool = True) -> Candidate:
    return Candidate(strategy, accuracy, "test", seconds, 8, within)


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # Fine-tuning clearly better and within budget: it wins.
        ([_candidate("feature_extraction", 0.87, 60), _candidate("fine_tune", 0.92, 480)], "fine_tune"),
        # Within half a point: the cheaper one wins.
        ([_candidate("feature_extraction", 0.986, 60), _candidate("fine_tune", 0.99, 480)], "feature_extraction"),
        # Six tenths ahead: the more accurate one wins, so auto never lands more than half a point below the best candidate.
        ([_candidate("feature_extraction", 0.950, 60), _candidate("fine_tune", 0.956, 480)], "fine_tune"),
        # Better but over the time budget: not recommended.
        ([_candidate("feature_extraction", 0.87, 60), _candidate("fine_tune", 0.92, 900, within=False)], "feature_extraction"),
        # Unknown accuracy is never recommended by measurement.
        ([_candidate("feature_extraction", 0.60, 60), _candidate("from_scratch", None, 100)], "feature_extraction"),
        # Nothing fits: the fastest.
        ([_candidate("fine_tune", 0.9, 900, within=False), _candidate("feature_extraction", 0.8, 700, within=False)], "feature_extraction"),
    ],
)
def test_the_recommended_candidate_is_the_most_accurate_in_budget_unless_a_cheaper_one_is_within_half_a_point(rows, expected) -> None:
    chosen = [row.strategy for row in _with_recommendation(rows) if row.recommended]
    assert chosen == [expected]


def test_the_probes_learning_curve_is_extended_to_the_training_images() -> None:
    # 20 % errors with 200 images, 13 % with 400: steeper than 1 / sqrt(n), so no floor, and the error falls as
    # 1 / sqrt(n) from the 13 %: 1,259 images leave 7.3 %, 600 leave 10.6 %.
    assert extrapolated_accuracy(0.80, 0.87, 200, 400, 1259) == pytest.approx(1 - 0.13 * math.sqrt(400 / 1259), abs=1e-9)
    assert extrapolated_accuracy(0.80, 0.87, 200, 400, 600) == pytest.approx(1 - 0.13 * math.sqrt(400 / 600), abs=1e-9)
    # 33,600 satellite tiles: 55.8 % errors on 193 tiles, 49.3 % on 386. The curve flattens towards a floor of
    # 33.4 %, so 23,520 tiles are expected at 64.5 % (feature extraction got 66.1 %; without a floor: 75 %).
    floor = 0.4928 - (0.5584 - 0.4928) / (193**-0.5 - 386**-0.5) * 386**-0.5
    assert floor == pytest.approx(0.334, abs=1e-3)
    assert extrapolated_accuracy(0.4416, 0.5072, 193, 386, 23_520) == pytest.approx(1 - floor - (0.4928 - floor) * math.sqrt(386 / 23_520), abs=1e-9)
    assert extrapolated_accuracy(0.4416, 0.5072, 193, 386, 23_520) == pytest.approx(0.645, abs=1e-3)
    assert extrapolated_accuracy(0.80, 0.87, 200, 400, 100_000) == pytest.approx(1 - 0.13 / 2)  # never below half the measured error
    assert extrapolated_accuracy(0.98, 0.98, 200, 400, 2000) == 0.98  # a flat curve is not extended
    assert extrapolated_accuracy(0.90, 0.87, 200, 400, 2000) == 0.87  # nor a falling one (noise)
    assert extrapolated_accuracy(0.80, 0.87, 200, 400, 300) == 0.87  # fewer training images than the probe had: nothing to extend
    assert extrapolated_accuracy(0.5, 1.0, 200, 400, 2000) == 1.0


def test_the_basis_says_how_far_the_curve_was_extended_and_calls_a_far_extension_a_rough_guess() -> None:
    assert extension_words(500, 1_470) == "its learning curve extended to your 1,470 training images"  # aerial: 3.7 times
    far = extension_words(483, 23_520)  # 33,600 tiles: 61 times the probe's 386 images
    assert far.startswith("its learning curve extended to your 23,520 training images (61 times the probe's 386: ")
    assert "rough guess" in far
    assert "rough guess" not in extension_words(500, 3_999) and "rough guess" in extension_words(500, 4_000)


def test_fine_tuning_is_expected_to_remove_a_share_of_the_remaining_errors() -> None:
    unlike = FAMILIAR_SIMILARITY - UNFAMILIAR_SPAN  # as unlike ImageNet as the scale goes: the whole share
    assert expected_fine_tune_accuracy(0.87, 300, unlike) == pytest.approx(0.87 + 0.13 * FINE_TUNE_ERROR_CUT)
    assert expected_fine_tune_accuracy(0.87, 300, 0.1) == expected_fine_tune_accuracy(0.87, 300, unlike)  # no further
    assert expected_fine_tune_accuracy(0.87, 30, unlike) < expected_fine_tune_accuracy(0.87, 300, unlike)  # little data, less to learn from
    assert expected_fine_tune_accuracy(0.87, 300, FAMILIAR_SIMILARITY) == 0.87  # ImageNet's own kind of photos: the frozen features fit
    assert expected_fine_tune_accuracy(1.0, 300, unlike) == 1.0


@pytest.mark.parametrize(
    ("similarity", "per_class", "share"),
    # The four shared sets as the advice measured them (December 2026), and the share each full run showed
    # (fine-tuning against feature extraction, 3 seeds): aerial about a fifth, cat breeds 4 %, ants and bees none.
    [(0.609, 70, 0.178), (0.808, 42, 0.034), (0.862, 104, 0.033), (0.792, 850, 0.095)],
    ids=["aerial", "cat_breeds", "ants_bees", "cats_dogs"],
)
def test_the_share_grows_with_unfamiliar_images_and_images_per_class(similarity, per_class, share) -> None:
    assert fine_tune_error_cut(per_class, similarity) == pytest.approx(share, abs=0.001)
    assert 0.0 < unfamiliarity(similarity) < 1.0  # none of the four is ImageNet's own kind of photos, nor wholly unlike them


def test_turned_copies_remove_a_further_share_of_fine_tunings_errors() -> None:
    # aerial as measured: 18 % without turns; with them a fifth of the rest too (the full runs: 35-41 % over three seeds)
    assert fine_tune_error_cut(70, 0.609, turns=True) == pytest.approx(1 - (1 - 0.178) * (1 - TURNED_COPIES_CUT), abs=0.001)
    assert fine_tune_error_cut(70, 0.609, turns=True) == pytest.approx(0.342, abs=0.001)
    assert fine_tune_error_cut(300, FAMILIAR_SIMILARITY, turns=True) == pytest.approx(TURNED_COPIES_CUT)  # the frozen features fit; the turned copies still teach
    assert expected_fine_tune_accuracy(0.947, 70, 0.609, turns=True) == pytest.approx(0.947 + 0.053 * 0.342, abs=0.0001)
    assert expected_fine_tune_accuracy(1.0, 70, 0.609, turns=True) == 1.0


def test_the_comparison_picks_the_faster_strategy_when_the_lead_is_within_the_validation_noise() -> None:
    # Digits-like: 269 validation images, fine-tuning ahead by 0.7 points: less than chance can make, so the faster one.
    close = [
        ComparisonRow("feature_extraction", 0.907, 0.26, 0.96, 60, 100, "finished", full_run_seconds=55, val_images=269),
        ComparisonRow("fine_tune", 0.914, 0.30, 0.91, 130, 32, "finished", full_run_seconds=300, val_images=269),
    ]
    assert best_row(close).strategy == "feature_extraction"
    # Clothing-like: a lead of five points on 460 images is real.
    clear = [
        ComparisonRow("feature_extraction", 0.87, 0.40, 0.87, 60, 100, "finished", full_run_seconds=55, val_images=460),
        ComparisonRow("fine_tune", 0.92, 0.25, 0.92, 200, 32, "finished", full_run_seconds=500, val_images=460),
    ]
    assert best_row(clear).strategy == "fine_tune"


def test_a_tie_goes_to_the_faster_strategy_and_failures_never_win() -> None:
    rows = [
        ComparisonRow("feature_extraction", 0.80, 0.50, 0.8, 2.0, 3, "finished"),
        ComparisonRow("fine_tune", 0.80, 0.40, 0.8, 9.0, 3, "finished"),
        ComparisonRow("from_scratch", None, None, None, 1.0, 0, "failed", "boom"),
    ]
    assert best_row(rows).strategy == "feature_extraction"
    assert best_row([replace(rows[1], val_accuracy=0.95), rows[0]]).strategy == "fine_tune"
    assert best_row(rows[2:]) is None


# --------------------------------------------------------------------------- real measurements


@pytest.mark.slow
def test_ants_bees_is_small_and_similar_and_shares_features_with_training(tmp_path: Path, ants_bees: Path, imagenet_weights: Path) -> None:
    from tl_core.training.run import train

    advice = advise(ants_bees, cache_dir=str(tmp_path / "cache"))
    result = advice.to_dict()
    assert (result["scenario"], result["size"], result["similarity"], result["strategy"]) == (1, "small", "high", "feature_extraction")
    assert result["similarity_score"] >= 0.65, result["components"]
    assert set(result["components"]) == {"probe", "shift", "confidence"}
    measurement = advice.measurement
    # Every image is measured (and its features shared with training), but the probes never learn from the held-out val/ folder.
    assert measurement.sample_size == 245 and measurement.probe_accuracy > measurement.random_probe_accuracy
    # The explanations name the measured numbers.
    assert any(f"{measurement.probe_accuracy:.0%} cross-validated accuracy" in reason for reason in advice.reasons)
    assert any(f"by {measurement.mean_shift:.2f} on average" in reason for reason in advice.reasons)
    assert any(f"Combined similarity {measurement.similarity_score:.2f}" in reason for reason in advice.reasons)

    # The features measured for the advice are the ones training reads: the backbone does not run again.
    run = train(TrainConfig(data_dir=str(ants_bees), out_dir=str(tmp_path / "run"), epochs=2, cache_dir=str(tmp_path / "cache")))
    assert run.summary.cache == {"images": "hit", "features": "hit"}


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """Handwritten digits, upscaled: strokes on paper, nothing like ImageNet photos."""
    return write_sample_dataset(tmp_path_factory.mktemp("digits") / "digits")


@pytest.mark.slow
def test_handwritten_digits_are_judged_dissimilar_on_the_command_line(capsys, tmp_path: Path, digits: Path, imagenet_weights: Path) -> None:
    code = main(["advise", str(digits), "--cache-dir", str(tmp_path / "cache")])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {"scenario", "size", "similarity", "similarity_score", "strategy", "freeze_layers", "reasons", "components", "candidates"} <= set(result)
    assert (result["scenario"], result["similarity"], result["matrix_strategy"]) == (2, "low", "fine_tune")
    assert result["similarity_score"] <= 0.35, result["components"]
    assert len(result["views"]) == 2 and "Transfer may barely help" in result["views"][1]
    # The matrix is the prior; the candidates, measured and timed, decide.
    candidates = {row["strategy"]: row for row in result["candidates"]}
    assert list(candidates) == ["feature_extraction", "fine_tune", "from_scratch"]
    assert [row["strategy"] for row in result["candidates"] if row["recommended"]] == [result["strategy"]]
    assert all(row["seconds"] > 0 for row in result["candidates"])
    assert candidates["feature_extraction"]["seconds"] < candidates["fine_tune"]["seconds"] < candidates["from_scratch"]["seconds"]
    assert candidates["from_scratch"]["expected_accuracy"] is None  # nothing predicts it: the comparison measures it
    assert any(reason.startswith("Expected on this device: feature extraction: ~") for reason in result["reasons"])
    # A mirrored digit is not the same digit: the probe notices, and the advice turns flips off.
    assert result["flip"] == "none" and any("Mirror images look like another class here" in reason for reason in result["reasons"])


@pytest.mark.slow
def test_compare_and_auto_strategy(capsys, tmp_path: Path, tiny_dataset: Path, imagenet_weights: Path) -> None:
    code = main([
        "compare", str(tiny_dataset), "--strategies", "feature_extraction,fine_tune", "--epochs", "1", "--image-size", "32",
        "--per-class", "4", "--out", str(tmp_path / "compare"), "--cache-dir", str(tmp_path / "cache"), "--json",
    ])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [row["strategy"] for row in report["rows"]] == ["feature_extraction", "fine_tune"]
    assert all(row["status"] == "finished" and 0 <= row["val_accuracy"] <= 1 and row["seconds"] > 0 for row in report["rows"])
    assert report["best"] in ("feature_extraction", "fine_tune")
    run = json.loads((tmp_path / "compare" / "fine_tune" / "run.json").read_text())
    assert run["data"]["counts"]["train"] == {"circles": 4, "squares": 4, "stripes": 4}  # subsampled training split
    assert run["data"]["counts"]["val"] == {"circles": 2, "squares": 2, "stripes": 2}  # validation kept whole

    code = main([
        "train", str(tiny_dataset), "--out", str(tmp_path / "auto"), "--strategy", "auto", "--freeze", "5", "--epochs", "1", "--warmup-epochs", "1",
        "--image-size", "32", "--cache-dir", str(tmp_path / "cache"),
    ])
    out = capsys.readouterr().out
    run = json.loads((tmp_path / "auto" / "run.json").read_text())
    assert code == 0 and "== advise:" in out and "note: Advice: Combined similarity" in out
    advised = advise(tiny_dataset, cache_dir=str(tmp_path / "cache"), seed=0).recommendation.strategy
    assert run["strategy"] == advised and run["config"]["strategy"] == advised  # the run follows the advice measured on the same data
    # The user's --freeze is never dropped silently: fine-tuning keeps it, any other strategy says it is not used.
    if run["strategy"] == "fine_tune":
        assert run["frozen_layers"] == 5 and any(note.startswith("Fine-tuning keeps your freeze depth of 5 layers") for note in run["notes"])
    else:
        assert any(note.startswith("Your freeze depth (5 layers) is not used") for note in run["notes"])


def test_the_reason_names_the_faster_choice_within_half_a_point_and_what_the_slower_one_might_add() -> None:
    from tl_core.advice.candidates import candidate_reason

    rows = _with_recommendation([_candidate("feature_extraction", 0.986, 60), _candidate("fine_tune", 0.99, 480)])
    reason = candidate_reason(rows, "feature_extraction", 10.0)
    assert reason.startswith("Expected on this device: feature extraction: ~98.6% in about 1 min; fine-tuning: ~99.0% in about 8 min.")
    assert "feature extraction is within half a point of the most accurate candidate in the budget and faster" in reason
    assert "choose fine-tuning for the last few tenths" in reason
    clear = _with_recommendation([_candidate("feature_extraction", 0.95, 60), _candidate("fine_tune", 0.96, 480)])
    assert "fine-tuning is expected to be the most accurate within your time budget of 10 min" in candidate_reason(clear, "feature_extraction", 10.0)
