"""The input size as part of the advice: the sizes weighed for small images, and the choice between them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tl_core.advice.sizes import MAX_UPSAMPLING, STEP, SizeProbe, candidate_sizes, typical_side
from tl_core.models.backbones import get_backbone, list_backbones

from conftest import make_class_folders
from fake_engine import canned_advice


@pytest.mark.parametrize(
    ("typical", "backbone", "expected"),
    [
        (500, "mobilenet_v2", [224]),  # photos: the network's own size only
        (200, "mobilenet_v2", [224]),  # close enough to it: nothing is upsampled far
        (64, "mobilenet_v2", [64, 128, 224]),  # satellite tiles: their own size, one between, the network's
        (150, "mobilenet_v2", [160, 192, 224]),
        (20, "mobilenet_v2", [32, 96, 224]),  # tinier than the network accepts: its smallest
        (64, "inception_v3", [96, 160, 299]),  # Inception needs at least 75 px
    ],
)
def test_the_sizes_weighed_for_images_of_a_typical_side(typical: int, backbone: str, expected: list[int]) -> None:
    assert candidate_sizes(typical, get_backbone(backbone)) == expected


@pytest.mark.parametrize("typical", [16, 33, 48, 64, 80, 96, 100, 127, 150, 180, 199, 224, 256, 400, 1000])
def test_every_size_is_accepted_by_the_backbone_and_never_far_above_the_pixels(typical: int) -> None:
    for spec in list_backbones():
        sizes = candidate_sizes(typical, spec)
        assert sizes == sorted(set(sizes)) and sizes[-1] == spec.default_size
        assert all(size >= spec.min_size and (size % STEP == 0 or size == spec.default_size) for size in sizes), (spec.name, sizes)
        smallest = sizes[0]
        if len(sizes) > 1:  # the images' own size: at most MAX_UPSAMPLING times their side, unless the backbone needs more
            assert smallest <= max(typical * MAX_UPSAMPLING, STEP * -(-spec.min_size // STEP)), (spec.name, typical, sizes)


def _dataset(tmp_path: Path, size: int):
    from tl_core.data.scan import scan_dataset

    return scan_dataset(make_class_folders(tmp_path / "data", {"ants": 30, "bees": 30}, size=size))


def test_the_typical_side_is_the_median_short_side(tmp_path: Path) -> None:
    assert typical_side(_dataset(tmp_path, 64)) == 64


def _advise_with_probes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, accuracies: dict[int, float], joined: tuple[float, float, float] | None = None, size: int = 64,
    turned: float | None = None, budget: float = 0.2, similarity: float = 0.9, crop=None,
):
    """``advise`` on 60 generated 64 px images, with the measurements faked: the probe's accuracy at each size from ``accuracies``.

    Feature extraction at 224 px is expected 2 points above its probe (the learning curve extended).

    The forward pass runs at 100 images/s at 224 px and in proportion to the pixels at smaller sizes.
    ``turned``: the probe's accuracy on the images turned a quarter turn; ``budget``: the time budget in minutes;
    ``similarity``: the measured similarity score (0.9: ImageNet's kind of photos, where fine-tuning is expected to add nothing).
    ``crop``: what the probe of the images' middles finds where it runs (``CropProbe``, or None).
    """
    import tl_core.advice.advise as advise_module
    from tl_core.models.blocks import layer_names

    dataset = _dataset(tmp_path, size)
    measurement = replace(
        canned_advice(dataset).measurement, shift_profile=[], forward_images_per_second=100.0, probe_accuracy=accuracies[224], mirror_probe_accuracy=None, feature_extraction_estimate=accuracies[224] + 0.02,
        turned_transfer_accuracy=turned, similarity_score=similarity,
    )
    monkeypatch.setattr(advise_module, "measure_similarity", lambda *arguments: (measurement, list(layer_names(get_backbone("mobilenet_v2")))))
    probed = []

    def fake_probe(dataset, backbone, size, mirrors, *rest, **keywords):
        if get_backbone(backbone).joined:  # the joined networks, at the network's size: 60 % of one network's speed
            probed.append(backbone)
            accuracy, baseline, error = joined
            return SizeProbe(size, accuracy, 60.0, backbone=backbone, baseline_accuracy=baseline, difference_error=error)
        probed.append(size)
        return SizeProbe(size, accuracies[size], 100.0 * (224 / size) ** 2)

    monkeypatch.setattr(advise_module, "probe_at_size", fake_probe)
    monkeypatch.setattr(advise_module, "probe_centre_crop", lambda *arguments: crop)
    if joined is None:
        monkeypatch.setattr(advise_module, "joined_backbone", lambda spec: None)
    advice = advise_module.advise(dataset, cache_dir=str(tmp_path / "cache"), time_budget_minutes=budget)
    return dataset, advice, probed


def test_small_images_are_advised_at_a_size_near_their_own_when_it_measures_at_least_as_well(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dataset, advice, probed = _advise_with_probes(tmp_path, monkeypatch, {64: 0.905, 128: 0.90, 224: 0.90})
    assert probed == [64, 128]  # every size but the network's own is probed; that one is the similarity's own probe
    assert {(row.strategy, row.image_size) for row in advice.candidates} >= {("feature_extraction", None), ("feature_extraction", 64), ("feature_extraction", 128)}
    chosen = next(row for row in advice.candidates if row.recommended)
    # Each size's expectation is the network's size's, moved by the paired probes' difference: 0.92 + 0.005.
    assert (chosen.strategy, chosen.image_size) == ("feature_extraction", 64) and advice.image_size == 64
    assert chosen.expected_accuracy == pytest.approx(0.925)
    assert all(" at 64 px" in row.accuracy_basis for row in advice.candidates if row.image_size == 64)
    assert advice.image_size_reason.startswith("Image size 64 px: your images are typically 64 px; of the sizes weighed (64 px, 128 px, 224 px)") and "upsampled 3.5x, for 12x" in advice.image_size_reason
    assert advice.image_size_reason in advice.reasons
    assert advice.to_dict()["image_size"] == 64 and advice.to_dict()["typical_side"] == 64


def test_a_smaller_size_within_a_point_does_not_take_the_lead_for_speed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Probes on a few hundred images cannot tell half a point; the network's own size keeps the lead unless a smaller one measures as well."""
    _, advice, _ = _advise_with_probes(tmp_path, monkeypatch, {64: 0.895, 128: 0.898, 224: 0.90})
    chosen = next(row for row in advice.candidates if row.recommended)
    assert chosen.image_size is None and advice.image_size is None
    assert advice.image_size_reason.startswith("Image size 224 px, the network's own: your images are typically 64 px")


def test_the_network_s_own_size_wins_where_it_measures_clearly_better(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, advice, _ = _advise_with_probes(tmp_path, monkeypatch, {64: 0.80, 128: 0.85, 224: 0.95})
    assert advice.image_size is None and "Image size 224 px, the network's own" in advice.image_size_reason
    assert [row.expected_accuracy for row in advice.candidates if row.strategy == "feature_extraction"] == pytest.approx([0.97, 0.82, 0.87])


def test_auto_and_the_setup_settings_follow_the_advised_size_and_keep_the_user_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tl_core.advice.advise as advise_module
    from tl_core.advice.auto import resolve_auto
    from tl_core.advice.settings import suggested_settings
    from tl_core.config import TrainConfig

    dataset, advice, _ = _advise_with_probes(tmp_path, monkeypatch, {64: 0.905, 128: 0.90, 224: 0.90})
    monkeypatch.setattr(advise_module, "advise", lambda *arguments, **keywords: advice)
    strategy = advice.recommendation.strategy
    assert suggested_settings(dataset, "mobilenet_v2", strategy, advice=advice).image_size == 64
    config = TrainConfig(data_dir=str(dataset.root), out_dir=str(tmp_path / "run"), strategy="auto", cache_dir=str(tmp_path / "cache"))
    resolved, notes = resolve_auto(config)
    assert resolved.image_size == 64 and resolved.strategy == strategy
    kept, notes = resolve_auto(replace(config, image_size=224))
    assert kept.image_size == 224 and "Your image size of 224 px is kept (the advice suggested 64 px)." in notes


JOINED = "mobilenet_v2+mobilenet_0.75"


def test_the_joined_networks_are_weighed_for_feature_extraction_and_chosen_where_they_measure_better(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tl_core.advice.advise as advise_module
    from tl_core.advice.auto import resolve_auto
    from tl_core.advice.settings import suggested_settings
    from tl_core.config import TrainConfig

    # Photos at the network's size: one size weighed; the joined probe reads 3 points above its first network's part, ± 1.
    dataset, advice, probed = _advise_with_probes(tmp_path, monkeypatch, {224: 0.80}, joined=(0.83, 0.80, 0.01), size=224)
    assert probed == [JOINED]  # measured on the same sample, not inferred
    joined = [row for row in advice.candidates if row.backbone == JOINED]
    assert [row.strategy for row in joined] == ["feature_extraction"]  # two networks side by side only extract features
    alone = next(row for row in advice.candidates if row.strategy == "feature_extraction" and row.backbone is None)
    assert joined[0].expected_accuracy == pytest.approx(alone.expected_accuracy + 0.02)  # the gain less its standard error
    assert "83.0% against 80.0% (+3.0 ± 1.0 points)" in joined[0].accuracy_basis
    assert joined[0].seconds > alone.seconds  # both networks' forward passes
    assert "MobileNetV2 + MobileNet (0.75 width), joined" in joined[0].title and "a probe per network" in joined[0].accuracy_basis
    assert joined[0].recommended and advice.chosen_backbone == JOINED and advice.to_dict()["chosen_backbone"] == JOINED
    assert advice.backbone == "mobilenet_v2"

    # auto runs it, and says why; the Setup page's settings start from it.
    monkeypatch.setattr(advise_module, "advise", lambda *arguments, **keywords: advice)
    config = TrainConfig(data_dir=str(dataset.root), out_dir=str(tmp_path / "run"), strategy="auto", cache_dir=str(tmp_path / "cache"))
    resolved, notes = resolve_auto(config)
    assert (resolved.backbone, resolved.strategy) == (JOINED, "feature_extraction")
    assert any(note.startswith("Backbone: MobileNetV2 + MobileNet (0.75 width), joined (you chose MobileNetV2)") for note in notes)
    assert suggested_settings(dataset, JOINED, "feature_extraction", advice=advice).epochs == advice.epochs


@pytest.mark.parametrize("joined", [(0.804, 0.80, 0.0), (0.83, 0.80, 0.03)], ids=["within half a point", "a gain within its noise"])
def test_the_joined_networks_are_not_chosen_where_one_network_measures_as_well(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, joined) -> None:
    """Within half a point, the single network's faster pass wins; so does it where the gain is no larger than the probe's noise."""
    _, advice, _ = _advise_with_probes(tmp_path, monkeypatch, {224: 0.80}, joined=joined, size=224)
    chosen = next(row for row in advice.candidates if row.recommended)
    assert chosen.backbone is None and advice.chosen_backbone is None
    assert any(row.backbone == JOINED for row in advice.candidates)


def test_a_joined_backbone_only_extracts_features() -> None:
    from tl_core.config import TrainConfig
    from tl_core.errors import ConfigError

    assert TrainConfig(data_dir="d", out_dir="o", backbone=JOINED, strategy="feature_extraction").validated().backbone == JOINED
    TrainConfig(data_dir="d", out_dir="o", backbone=JOINED, strategy="auto").validated()
    for strategy in ("fine_tune", "full_fine_tune", "from_scratch"):
        with pytest.raises(ConfigError, match="only extract features"):
            TrainConfig(data_dir="d", out_dir="o", backbone=JOINED, strategy=strategy).validated()


def test_turned_views_are_advised_where_turns_keep_the_class_and_their_passes_fit_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    accuracies = {224: 0.90}
    _, advice, _ = _advise_with_probes(tmp_path / "a", monkeypatch, accuracies, size=224, turned=0.90, budget=5.0)
    assert advice.turns and advice.recommendation.strategy == "fine_tune"  # it learns from the turned images too: a fifth fewer errors expected
    assert "learns from your images turned too" in next(row for row in advice.candidates if row.strategy == "fine_tune").accuracy_basis
    assert any(reason.startswith("Turned images show the same class here") and "averages its answers over them" in reason for reason in advice.reasons)
    _, upright, _ = _advise_with_probes(tmp_path / "b", monkeypatch, accuracies, size=224, turned=0.80, budget=5.0)  # up matters: a 10-point loss
    assert not upright.turns and not any("Turned images" in reason for reason in upright.reasons)
    assert upright.recommendation.strategy == "feature_extraction"
    assert "turned" not in next(row for row in upright.candidates if row.strategy == "fine_tune").accuracy_basis
    with_turns = next(row for row in advice.candidates if row.strategy == "feature_extraction" and row.backbone is None)
    without = next(row for row in upright.candidates if row.strategy == "feature_extraction" and row.backbone is None)
    assert with_turns.seconds > without.seconds  # six more passes of the backbone, counted
    # A budget between the two: feature extraction fits only without the turned views, so they stay off, and the advice says why.
    budget = (with_turns.seconds + without.seconds) / 2 / 60
    _, tight, _ = _advise_with_probes(tmp_path / "c", monkeypatch, accuracies, size=224, turned=0.90, budget=budget)
    assert not tight.turns and tight.recommendation.strategy == "feature_extraction"
    assert any("would take feature extraction over your time budget" in reason for reason in tight.reasons)


@pytest.mark.parametrize(("similarity", "expected"), [(0.5, "fine_tune"), (0.9, "feature_extraction")], ids=["unlike ImageNet", "ImageNet's kind of photos"])
def test_fine_tuning_is_advised_where_the_images_measure_unlike_imagenet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, similarity, expected) -> None:
    """Fine-tuning's expectation grows with the measured unfamiliarity; more than half a point ahead, it is worth its minutes."""
    _, advice, _ = _advise_with_probes(tmp_path, monkeypatch, {224: 0.90}, size=224, budget=10.0, similarity=similarity)
    rows = {row.strategy: row for row in advice.candidates if row.image_size is None and row.backbone is None}
    gain = rows["fine_tune"].expected_accuracy - rows["feature_extraction"].expected_accuracy
    assert (gain > 0.005) == (expected == "fine_tune") and rows["fine_tune"].within_budget
    assert advice.recommendation.strategy == expected
    assert f"similarity {similarity:.2f}" in rows["fine_tune"].accuracy_basis


def test_the_joined_networks_are_not_probed_where_feature_extraction_leaves_too_few_errors_to_matter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """99.5 % expected: a third fewer errors would add 0.17 points, under the half point that could change the advice; the probe's time is saved."""
    _, advice, probed = _advise_with_probes(tmp_path, monkeypatch, {224: 0.975}, joined=(0.99, 0.975, 0.0), size=224, budget=10.0)
    assert probed == [] and not any(row.backbone == JOINED for row in advice.candidates)
    assert any("Feature extraction with MobileNetV2 + MobileNet (0.75 width), joined was not weighed: feature extraction is expected to get 99.5% right" in reason for reason in advice.reasons)
    # 98 % expected: a third fewer errors would be 0.67 points, so the pair is probed.
    _, advice, probed = _advise_with_probes(tmp_path / "second", monkeypatch, {224: 0.96}, joined=(0.97, 0.96, 0.0), size=224, budget=10.0)
    assert probed == [JOINED] and not any("was not weighed" in reason for reason in advice.reasons)


def test_where_the_middles_read_better_the_run_reads_them_and_every_candidate_is_credited_their_gain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tl_core.advice.framing import CropProbe

    _, whole, _ = _advise_with_probes(tmp_path / "a", monkeypatch, {224: 0.90}, size=224, budget=10.0)
    assert not whole.centre_crop and whole.crop_probe is None
    _, middles, _ = _advise_with_probes(tmp_path / "b", monkeypatch, {224: 0.90}, size=224, budget=10.0, crop=CropProbe(0.93, 0.90, 0.01, 60))
    assert middles.centre_crop and middles.crop_probe.images == 60
    assert any("reads each image's middle" in reason for reason in middles.reasons)
    for before, after in zip(whole.candidates, middles.candidates, strict=True):  # 2 points: 3 measured, less 1 of noise
        if before.expected_accuracy is not None:
            assert after.expected_accuracy == pytest.approx(min(1.0, before.expected_accuracy + 0.02))
            assert after.accuracy_basis == before.accuracy_basis + "; it includes the 2.0 points that reading the middle of each image measured beyond its noise"
    _, noise, _ = _advise_with_probes(tmp_path / "c", monkeypatch, {224: 0.90}, size=224, budget=10.0, crop=CropProbe(0.905, 0.90, 0.01, 60))
    assert not noise.centre_crop and any("the whole images are used" in reason for reason in noise.reasons)
    paying = CropProbe(0.99, 0.97, 0.001, 60)
    _, saturated, _ = _advise_with_probes(tmp_path / "d", monkeypatch, {224: 0.975}, size=224, budget=10.0, crop=paying)  # expected 99.5 %: not probed
    assert saturated.crop_probe is None and not saturated.centre_crop
