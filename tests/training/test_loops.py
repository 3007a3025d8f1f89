"""The loops: the fine-tuning learning-rate schedule and label smoothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def test_fine_tuning_schedule_warms_up_over_the_first_epoch_then_decays_to_a_hundredth() -> None:
    from tl_core.training.loops import fine_tune_schedule

    schedule = fine_tune_schedule(1e-4, steps_per_epoch=50, epochs=12, shape="cosine")
    rates = np.array([float(schedule(step)) for step in range(0, 600)])
    assert rates[0] == pytest.approx(1e-5, rel=1e-3)  # starts at a tenth of the peak
    assert rates.argmax() == pytest.approx(50, abs=1) and rates.max() == pytest.approx(1e-4, rel=1e-3)
    assert np.all(np.diff(rates[:50]) > 0) and np.all(np.diff(rates[51:]) <= 0)  # up during the first epoch, then only down
    assert rates[-1] == pytest.approx(1e-6, rel=0.05)  # a hundredth of the peak by the last step
    short = fine_tune_schedule(1e-4, steps_per_epoch=50, epochs=2, shape="cosine")  # warm-up is at most a tenth of the phase
    assert np.argmax([float(short(step)) for step in range(100)]) == 10
    assert fine_tune_schedule(1e-4, 50, 8, "constant") == 1e-4


def test_label_smoothing_keeps_the_head_from_becoming_certain() -> None:
    import keras

    from tl_core.models.build import build_head
    from tl_core.training.loops import HeadTrainer

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 200)
    features = (rng.normal(size=(200, 8)) + labels[:, None] * 4).astype("float32")  # easily separable
    confidence = {}
    for smoothing in (0.0, 0.2):
        keras.utils.set_random_seed(0)
        head = build_head(8, 2, dropout=0.0)
        HeadTrainer(head, 0.05, 32, label_smoothing=smoothing).fit(features, labels, (features, labels), epochs=60)
        confidence[smoothing] = float(np.asarray(head(features)).max(axis=1).mean())
    assert confidence[0.0] > 0.99
    # With 0.2 smoothing over 2 classes the target is 0.9 for the right class: the head settles near it.
    assert confidence[0.2] == pytest.approx(0.9, abs=0.03)


def test_smoothed_loss_for_fit_matches_the_formula() -> None:
    from tl_core.training.loops import SmoothedSparseCrossentropy

    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype="float32")
    labels = np.array([0, 2])
    targets = np.eye(3)[labels] * 0.9 + 0.1 / 3
    expected = float(np.mean(-(targets * np.log(probabilities)).sum(axis=1)))
    assert float(SmoothedSparseCrossentropy(0.1)(labels, probabilities)) == pytest.approx(expected, rel=1e-5)


def test_each_head_of_a_joined_head_learns_as_if_trained_alone() -> None:
    """One head per network, each learning from its own answer: the first network's head ends where a head trained on its part alone does."""
    from tl_core.models.build import build_head
    from tl_core.training.loops import HeadTrainer

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 120)
    informative = (rng.normal(size=(120, 6)) + np.eye(3)[labels].repeat(2, axis=1) * 2).astype("float32")
    noise = rng.normal(size=(120, 5)).astype("float32")  # the second network sees nothing useful
    joined = build_head(11, 3, dropout=0.0, seed=4, parts=(6, 5))
    alone = build_head(6, 3, dropout=0.0, seed=4)
    HeadTrainer(joined, 0.01, 16, seed=1).fit(np.concatenate([informative, noise], axis=1), labels, (np.concatenate([informative, noise], axis=1), labels), epochs=5)
    HeadTrainer(alone, 0.01, 16, seed=1).fit(informative, labels, (informative, labels), epochs=5)
    trained, reference = joined.get_layer("part_0_predictions").kernel, alone.get_layer("predictions").kernel
    # Adam's steps do not depend on the loss's scale (the joined loss is the mean of two); only its epsilon tells them apart.
    np.testing.assert_allclose(np.asarray(trained), np.asarray(reference), atol=2e-3)
    assert float(np.abs(np.asarray(trained) - np.asarray(build_head(6, 3, dropout=0.0, seed=4).get_layer("predictions").kernel)).max()) > 0.02  # it did learn


def test_the_optimizer_of_fit_stays_off_the_classifier_the_files_hold(tmp_path: Path) -> None:
    """Compiled itself, the classifier carried Adam's two moments of every weight that trains into model.keras (31.9 MB for 16.9)."""
    import io
    import zipfile

    import h5py
    import keras

    from tl_core.training.loops import training_model

    inputs = keras.Input((4,))
    classifier = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="predictions")(keras.layers.Dense(64, name="wide")(inputs)), name="classifier")
    trained = training_model(classifier, None, False)
    assert trained is not classifier
    trained.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    x, y = np.random.default_rng(0).normal(size=(32, 4)).astype("float32"), np.arange(32) % 3
    before = classifier.predict(x, verbose=0)
    trained.fit(x, y, epochs=2, verbose=0)
    assert not np.allclose(classifier.predict(x, verbose=0), before)  # the classifier's own weights trained
    exported = keras.Model(classifier.inputs, classifier.outputs)
    exported.save(tmp_path / "model.keras")
    with zipfile.ZipFile(tmp_path / "model.keras") as archive:
        weights = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
        names = []
        weights.visit(names.append)
    assert not any("optimizer" in name for name in names)
