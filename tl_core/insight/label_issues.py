"""Find images whose label is probably wrong, and near-duplicate images that carry different labels.

How it judges, in short:

1. Every image goes through the frozen pretrained backbone once; its pooled
   output (the bottleneck features) is cached under the same key training uses,
   so a later feature-extraction run, or a second search, does not compute them again.
2. A logistic regression on those features (scaled to unit length, its
   regularisation chosen by cross-validated log-loss) is trained k times (stratified folds).
   Each image gets its class probabilities from the one model that did not see
   it: *out-of-fold* probabilities, so no image is judged by a model that learnt
   its (possibly wrong) label.
3. The suspects are the images whose out-of-fold model prefers another class,
   least likely given label first. Confident learning (the ``cleanlab`` package)
   then marks the surest of them: it compares the probabilities with a threshold
   per class (the mean probability a class's own images get), estimates how many
   images of each class carry each wrong label, and flags that many. On data with
   few wrong labels it often flags none, while the list still shows the images
   worth a look (hard pictures as well as wrong labels).

Odd ones out: images unlike all the others (the mean distance to their nearest
neighbours in feature space far above the rest's; cleanlab's ``OutOfDistribution``
score, computed here in blocks): a placeholder picture, a screenshot, a photo of
something else. Their label may be fine and the picture still does not belong.

Near duplicates: two images whose features point the same way (cosine
similarity after centring, at or above a threshold) but whose labels differ.
Files with identical bytes in different classes are listed too.

The judged labels are the ones training would use: the user's saved decisions
(``tl_core.data.decisions``) are applied first, so a relabelled image is judged with
its new label and an excluded one is not judged.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from tl_core.data.records import SPLIT_NAMES, Dataset, ImageRecord
from tl_core.errors import DataError
from tl_core.events import StopRequest
from tl_core.features import out_of_fold_probabilities, out_of_fold_view_probabilities

DEFAULT_FOLDS = 5
# Centred cosine similarity of pooled features at or above which two images count as near duplicates.
# Measured with MobileNetV2's features (its top and three earlier layers) on cats_dogs photos and altered copies of
# 50 of them, median (10th percentile): re-encoded at JPEG quality 70 1.00 (1.00), shrunk to 60 % 0.99 (0.96), cropped
# by 5 % 0.93 (0.88), turned by 5 degrees 0.90 (0.83); the closest pair of different photos with different labels in
# the 3,000 scored 0.63 (0.56 with the top alone, as this threshold was first set).
NEAR_DUPLICATE_SIMILARITY = 0.8
MAX_NEAR_DUPLICATES = 200
# Inverse regularisation strengths tried for the out-of-fold classifier (features scaled to unit length).
REGULARISATION_GRID = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0)
# The strength is chosen on at most this many of the judged images (every class kept in proportion): on 33,600
# tiles the grid's 30 fits on every image took 15-20 minutes on 2 cores.
GRID_IMAGES = 5000
# An image is an odd one out when its typicality score lies this many median absolute deviations below the median.
OUTLIER_DEVIATIONS = 4.0
MAX_OUTLIER_SHARE = 0.02  # and at most this share of the judged images is listed (at least 3)


@dataclass(frozen=True)
class Suspect:
    """An image whose given label may be wrong: the model that never saw it finds another class more likely.

    Attributes:
        path: Absolute path.
        relative_path: Path relative to the dataset folder (the key of a decision).
        split: ``train``, ``val`` or ``test``.
        given_label: The class it is labelled as.
        suggested_label: The class the out-of-fold model finds most likely, other than the given one.
        confidence: Out-of-fold probability of the suggested class.
        given_probability: Out-of-fold probability of the given class (the lower, the more suspicious).
        flagged: Confident learning flags it too: its probability of the suggested class clears that
            class's threshold, so it counts among the labels estimated wrong (the surest cases).
    """

    path: str
    relative_path: str
    split: str
    given_label: str
    suggested_label: str
    confidence: float
    given_probability: float
    flagged: bool = False


@dataclass(frozen=True)
class NearDuplicate:
    """Two images that look the same but carry different labels (paths, relative paths, labels and splits: the pair's, in order)."""

    paths: tuple[str, str]
    relative_paths: tuple[str, str]
    labels: tuple[str, str]
    splits: tuple[str, str]
    similarity: float
    identical: bool = False  # the same bytes

    @classmethod
    def of(cls, first: ImageRecord, second: ImageRecord, similarity: float, identical: bool = False) -> NearDuplicate:
        return cls(
            (first.path, second.path), (first.relative_path, second.relative_path), (first.class_name, second.class_name), (first.split, second.split),
            similarity, identical,
        )


@dataclass(frozen=True)
class OddOneOut:
    """An image unlike all the others, whatever its label.

    Attributes:
        path: Absolute path.
        relative_path: Path relative to the dataset folder.
        split: Its split.
        given_label: Its class.
        typicality: The out-of-distribution score in [0, 1] of ``typicality_scores`` (lower: more unusual).
        deviations: How many median absolute deviations below the median score it lies.
    """

    path: str
    relative_path: str
    split: str
    given_label: str
    typicality: float
    deviations: float


@dataclass
class LabelReport:
    """What the search found.

    Attributes:
        suspects: Most suspicious first (lowest probability of the given label).
        near_duplicates: Most similar first (identical files first of all).
        odd_ones_out: Most unusual first.
        class_names: The classes, as judged (after the user's decisions).
        judged: Images judged.
        splits: The splits judged.
        folds: Folds of the out-of-fold classifier.
        regularisation: The inverse regularisation strength ``C`` it was given (see ``choose_regularisation``).
        out_of_fold_accuracy: How often the out-of-fold classifier agrees with the given labels.
        backbone: The backbone whose features were used.
        image_size: Side of the images fed to it.
        features_cached: True when the features came from the cache.
        estimated_issues: Confident learning's estimate of wrong labels among the judged images.
        seconds: Time taken.
        skipped: Images that could not be decoded, with the reason.
        method: In words.
    """

    suspects: list[Suspect]
    near_duplicates: list[NearDuplicate]
    odd_ones_out: list[OddOneOut]
    class_names: list[str]
    judged: int
    splits: list[str]
    folds: int
    regularisation: float
    out_of_fold_accuracy: float
    backbone: str
    image_size: int
    features_cached: bool
    estimated_issues: int
    seconds: float
    skipped: list[dict] = field(default_factory=list)
    method: str = (
        "Out-of-fold probabilities of a logistic regression on the frozen backbone's features (regularisation chosen by cross-validation); "
        "suspects are the images whose held-out prediction is another class, least likely label first; confident learning "
        "(cleanlab.filter.find_label_issues, pruned by noise rate) flags the surest."
    )

    def to_dict(self) -> dict:
        return asdict(self)


def find_label_issues(
    dataset: Dataset,
    backbone: str = "mobilenet_v2",
    image_size: int | None = None,
    splits: Sequence[str] | None = None,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    cache_dir: str | None = None,
    near_duplicate_similarity: float = NEAR_DUPLICATE_SIMILARITY,
    on_progress: Callable[[str, int, int], None] | None = None,
    stop: StopRequest | None = None,
) -> LabelReport:
    """Ranks the images whose label is least likely given what the others teach (see the module docstring).

    Args:
        dataset: The scanned dataset (with the user's decisions applied, as ``scan_dataset`` does).
        backbone: A backbone of the table; its ImageNet weights give the features.
        image_size: Side of the images; the backbone's default size when None.
        splits: The splits to judge; all when None. Only the judged images train the folds' classifiers.
        folds: Folds of the out-of-fold classifier (fewer when a class has fewer images).
        seed: Seed of the folds.
        cache_dir: The cache folder shared with training.
        near_duplicate_similarity: Threshold of the near-duplicate search (see ``NEAR_DUPLICATE_SIMILARITY``).
        on_progress: Called with (phase, done, total); phases ``decode``, ``features``, ``judge``.
        stop: Checked between batches; a requested stop ends the search with ``tl_core.events.Interrupted``.

    Raises:
        DataError: When a judged class has fewer than two images, or fewer than two classes are judged.
    """
    started = time.perf_counter()
    splits = judged_splits(dataset, splits)
    records = [record for record in dataset.records if record.split in splits]
    features, mirrored, size, cached, failed = _features(records, backbone, image_size, cache_dir, on_progress, stop)
    if failed:
        keep = np.array([record.path not in failed for record in records])
        records = [record for record, kept in zip(records, keep, strict=True) if kept]
        features, mirrored = features[keep], None if mirrored is None else mirrored[keep]
    from tl_core.models.backbones import get_backbone

    report = judge_labels(
        dataset, records, features, splits, mirrored=mirrored, folds=folds, seed=seed, near_duplicate_similarity=near_duplicate_similarity,
        backbone=get_backbone(backbone).display_name, image_size=size, features_cached=cached, started=started,
        on_progress=(lambda done, total: on_progress("judge", done, total)) if on_progress else None,
    )
    report.skipped = [{"path": path, "reason": reason} for path, reason in sorted(failed.items())]
    return report


def judged_splits(dataset: Dataset, splits: Sequence[str] | None) -> list[str]:
    """The splits to judge: those asked for (checked), else every split the dataset has."""
    unknown = sorted(set(splits or ()) - set(SPLIT_NAMES))
    if unknown:
        raise DataError(f"Unknown split {', '.join(unknown)}; judge some of {', '.join(SPLIT_NAMES)}.")
    present = {record.split for record in dataset.records}
    return list(splits) if splits else [split for split in SPLIT_NAMES if split in present]


def judge_labels(
    dataset: Dataset,
    records: Sequence[ImageRecord],
    features: np.ndarray,
    splits: Sequence[str],
    *,
    mirrored: np.ndarray | None = None,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    near_duplicate_similarity: float = NEAR_DUPLICATE_SIMILARITY,
    backbone: str = "",
    image_size: int = 0,
    features_cached: bool = False,
    started: float | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> LabelReport:
    """The judgement itself, on features already computed (row ``i`` for ``records[i]``); see ``find_label_issues``.

    ``on_progress`` is called with (classifiers trained, classifiers in all): one per fold and
    regularisation strength tried, then one per fold for the judgement, from 0 on.
    """
    started = time.perf_counter() if started is None else started
    labels = np.array([record.label for record in records])
    _check_judgeable(dataset, labels, splits)
    folds = int(min(folds, np.bincount(labels, minlength=dataset.num_classes)[np.unique(labels)].min()))
    total = folds * (len(REGULARISATION_GRID) + 1)
    fitted = _Counter(on_progress, total)
    strength = choose_regularisation(features, labels, folds, seed, on_fit=fitted.one_more)
    make_model = unit_length_regression(strength)

    def make_reporting() -> _Reporting:
        return _Reporting(make_model(), fitted.one_more)

    if mirrored is not None and len(records) > GRID_IMAGES:
        # Many images: the mirror images would double every fold's training rows (27,000 tiles: 2-3 min a fold) for
        # little; the folds train on the images alone and still answer for both views, averaged.
        probabilities = np.mean(out_of_fold_view_probabilities(features, labels, dataset.num_classes, folds, seed, make_reporting, [features, mirrored]), axis=0)
    else:
        probabilities = out_of_fold_probabilities(features, labels, dataset.num_classes, folds, seed, make_reporting, mirrored=mirrored)
    suspects, estimated = _suspects(records, labels, probabilities, dataset.class_names)
    duplicates = near_duplicates(records, features, near_duplicate_similarity) + _identical_conflicts(dataset, splits)
    duplicates.sort(key=lambda pair: (not pair.identical, -pair.similarity))
    return LabelReport(
        suspects=suspects,
        near_duplicates=duplicates[:MAX_NEAR_DUPLICATES],
        odd_ones_out=odd_ones_out(records, features, dataset.class_names),
        class_names=list(dataset.class_names),
        judged=len(records),
        splits=list(splits),
        folds=folds,
        regularisation=strength,
        out_of_fold_accuracy=round(float((probabilities.argmax(axis=1) == labels).mean()), 4),
        backbone=backbone,
        image_size=image_size,
        features_cached=features_cached,
        estimated_issues=estimated,
        seconds=round(time.perf_counter() - started, 2),
    )


def unit_length_regression(strength: float) -> Callable:
    """The finder's classifier: features scaled to unit length, a logistic regression with inverse regularisation ``strength``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    return lambda: make_pipeline(Normalizer(), LogisticRegression(max_iter=3000, C=strength))


class _Counter:
    """Counts the classifiers trained and reports after each one (from 0 of ``total`` at the start)."""

    def __init__(self, on_progress: Callable[[int, int], None] | None, total: int) -> None:
        self.on_progress, self.total, self.done = on_progress, total, 0
        if on_progress:
            on_progress(0, total)

    def one_more(self) -> None:
        self.done += 1
        if self.on_progress:
            self.on_progress(min(self.done, self.total), self.total)


class _Reporting:
    """A scikit-learn classifier that reports when it has been fitted."""

    def __init__(self, model, on_fit: Callable[[], None]) -> None:
        self.model, self.on_fit = model, on_fit

    def fit(self, features, labels):
        self.model.fit(features, labels)
        self.on_fit()
        return self

    def predict_proba(self, features):
        return self.model.predict_proba(features)

    @property
    def classes_(self):
        return self.model.classes_


def choose_regularisation(features: np.ndarray, labels: np.ndarray, folds: int, seed: int, on_fit: Callable[[], None] | None = None) -> float:
    """The inverse regularisation strength ``C`` with the best cross-validated log-loss, from ``REGULARISATION_GRID``.

    Too weak a regularisation lets the classifier learn the wrong labels too, and
    then it no longer contradicts them; too strong a one blurs every class. How much
    is right depends on the data, so it is measured. The choice uses every label
    (one number for the whole set); each image's probabilities still come from a
    model that did not see it. On many images the choice is made on a sample of
    ``GRID_IMAGES`` (``grid_sample``): it is one number, and a sample that size
    measures it in a fraction of the time.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold
    from sklearn.preprocessing import normalize

    chosen = grid_sample(labels, GRID_IMAGES, folds, seed)
    unit, labels = normalize(features[chosen]), labels[chosen]
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed + 1).split(unit, labels))
    classes = np.unique(labels)
    losses = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for strength in REGULARISATION_GRID:
            loss = 0.0
            for train, held_out in splits:
                model = LogisticRegression(max_iter=3000, C=strength).fit(unit[train], labels[train])
                loss += log_loss(labels[held_out], model.predict_proba(unit[held_out]), labels=classes) * len(held_out)
                if on_fit is not None:
                    on_fit()
            losses[strength] = loss
    return min(losses, key=losses.get)


def grid_sample(labels: np.ndarray, limit: int, folds: int, seed: int) -> np.ndarray:
    """Indices of about ``limit`` images, each class in proportion but with at least ``2 * folds`` (or all it has); all when there are no more than ``limit``."""
    if len(labels) <= limit:
        return np.arange(len(labels))
    generator = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        take = min(len(members), max(2 * folds, round(limit * len(members) / len(labels))))
        chosen.append(generator.choice(members, take, replace=False))
    return np.sort(np.concatenate(chosen))


def near_duplicates(records: Sequence[ImageRecord], features: np.ndarray, threshold: float) -> list[NearDuplicate]:
    """Pairs of images with different labels whose centred features have a cosine similarity of at least ``threshold``.

    Works through the images in blocks (``cosine_blocks``).
    """
    if len(records) < 2:
        return []
    labels = np.array([record.label for record in records])
    pairs = []
    for start, similarity in cosine_blocks(features - features.mean(axis=0, keepdims=True)):
        rows, columns = np.nonzero(similarity >= threshold)
        for row, column in zip(rows.tolist(), columns.tolist(), strict=True):
            first = start + row
            if column > first and labels[first] != labels[column]:
                pairs.append(NearDuplicate.of(records[first], records[column], round(float(similarity[row, column]), 4)))
    return pairs


def odd_ones_out(records: Sequence[ImageRecord], features: np.ndarray, class_names: Sequence[str]) -> list[OddOneOut]:
    """Images whose features are far from all others' (see ``OUTLIER_DEVIATIONS`` and ``MAX_OUTLIER_SHARE``)."""
    if len(records) < 12:  # too few neighbours for a distance to mean anything
        return []
    scores = typicality_scores(features)
    median = float(np.median(scores))
    spread = float(np.median(np.abs(scores - median))) or 1e-12
    deviations = (median - scores) / spread
    limit = max(3, int(MAX_OUTLIER_SHARE * len(records)))
    order = [int(index) for index in np.argsort(scores) if deviations[index] >= OUTLIER_DEVIATIONS][:limit]
    return [
        OddOneOut(records[index].path, records[index].relative_path, records[index].split, class_names[records[index].label], round(float(scores[index]), 4), round(float(deviations[index]), 1))
        for index in order
    ]


def typicality_scores(features: np.ndarray, neighbours: int = 10) -> np.ndarray:
    """``exp(-d / median d)`` per image, ``d`` its mean cosine distance to its ``neighbours`` nearest others: cleanlab's
    ``OutOfDistribution`` score (the same to 1e-6), in blocks of float32 products instead of a search over every pair
    (10,000 images: 3.4 s against 10.4 s in one run; 33,600: about 40 s), its memory a block of rows times the images."""
    count, nearest = len(features), min(neighbours, len(features) - 1)
    if nearest < 1:
        return np.ones(count)
    distances = np.empty(count)
    for start, similarity in cosine_blocks(features):
        rows = np.arange(len(similarity))
        similarity[rows, start + rows] = -np.inf  # not its own neighbour
        closest = np.partition(similarity, count - nearest, axis=1)[:, count - nearest :]
        distances[start : start + len(similarity)] = (1.0 - closest.astype(np.float64)).mean(axis=1)
    return np.exp(-distances / max(float(np.median(distances)), 100 * np.finfo(np.float64).eps))


def cosine_blocks(features: np.ndarray):
    """``(start, similarities)`` for consecutive blocks of rows: the cosine similarity (float32) of each row's image with every
    image, so memory stays at a block of rows (at most 1,024, about 128 MB) times the images whatever the dataset's size."""
    unit = (features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    block = max(64, min(1024, 32_000_000 // max(len(unit), 1)))
    for start in range(0, len(unit), block):
        yield start, unit[start : start + block] @ unit.T


def _identical_conflicts(dataset: Dataset, splits: Sequence[str]) -> list[NearDuplicate]:
    judged = {record.path: record for record in dataset.records if record.split in splits}
    pairs = []
    for group in dataset.duplicate_groups():
        members = [judged[path] for path in group.paths if path in judged]
        for index, first in enumerate(members):
            for second in members[index + 1 :]:
                if first.class_name != second.class_name:
                    pairs.append(NearDuplicate.of(first, second, 1.0, identical=True))
    return pairs


def _suspects(records: Sequence[ImageRecord], labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]) -> tuple[list[Suspect], int]:
    from cleanlab.count import num_label_issues
    from cleanlab.filter import find_label_issues as confident_learning

    present = np.unique(labels)
    # cleanlab wants labels 0..k-1 with every class present: judge among the classes that are.
    local = np.searchsorted(present, labels)
    local_probabilities = probabilities[:, present]
    local_probabilities = local_probabilities / np.maximum(local_probabilities.sum(axis=1, keepdims=True), 1e-12)
    # One process: by default cleanlab forks a pool, and a fork of a process whose TensorFlow and ONNX Runtime threads
    # hold locks can hang for good (seen in the web server: the pool's join never returned). The work is milliseconds.
    flagged = set(confident_learning(local, local_probabilities, filter_by="prune_by_noise_rate", n_jobs=1).nonzero()[0].tolist())
    estimated = int(num_label_issues(local, local_probabilities))
    disagreeing = set(np.nonzero(probabilities.argmax(axis=1) != labels)[0].tolist())
    suspects = []
    for index in sorted(flagged | disagreeing, key=lambda index: (probabilities[index, labels[index]], index)):
        given = labels[index]
        others = probabilities[index].copy()
        others[given] = -1.0
        suggested = int(others.argmax())
        record = records[index]
        suspects.append(Suspect(
            path=record.path,
            relative_path=record.relative_path,
            split=record.split,
            given_label=class_names[given],
            suggested_label=class_names[suggested],
            confidence=round(float(probabilities[index, suggested]), 4),
            given_probability=round(float(probabilities[index, given]), 4),
            flagged=index in flagged,
        ))
    return suspects, estimated


def _check_judgeable(dataset: Dataset, labels: np.ndarray, splits: Sequence[str]) -> None:
    counts = np.bincount(labels, minlength=dataset.num_classes)
    present = [name for name, count in zip(dataset.class_names, counts, strict=True) if count]
    where = f" in the {', '.join(splits)} split{'s' if len(splits) > 1 else ''}"
    if len(present) < 2:
        raise DataError(f"Only {len(present)} class has images{where}; judging labels needs at least two classes.")
    lonely = [name for name, count in zip(dataset.class_names, counts, strict=True) if count == 1]
    if lonely:
        raise DataError(
            f"Class {', '.join(repr(name) for name in lonely)} has a single image{where}, so no model that has not seen it knows the class. "
            "Add images to it (at least 2; 5 or more for a useful judgement) or judge more splits."
        )


def _features(records, backbone, image_size, cache_dir, on_progress, stop):
    """Features of the records (and of their mirror images when those are cached already), the size, whether cached, failed decodes."""
    from tl_core.data.decoded import decode_images
    from tl_core.features import MIRRORED, ORIGINAL, FeatureCache, cached_features, view_keys
    from tl_core.models.backbones import get_backbone
    from tl_core.models.build import build_backbone, build_feature_model
    from tl_core.models.weights import weights_identity
    from tl_core.runtime import backbone_runner

    spec = get_backbone(backbone)
    size = image_size or spec.default_size
    if size < spec.min_size:
        raise DataError(f"{spec.display_name} needs images of at least {spec.min_size} pixels, not {size}.")

    def progress(phase: str) -> Callable[[int, int], None] | None:
        return (lambda done, total: on_progress(phase, done, total)) if on_progress else None

    decoded = decode_images(records, size, cache_dir=cache_dir, on_progress=progress("decode"), stop=stop)
    failed = {item.path: item.reason for item in decoded.failed}
    keys = view_keys(spec, weights_identity(spec, "imagenet"), size, decoded.key)
    identity = weights_identity(spec, "imagenet")

    def forward(view: str):  # by the runtime chosen for this machine (tl_core.runtime); built only when the features are not cached
        model = build_feature_model(spec, build_backbone(spec, "imagenet"), size)
        return backbone_runner(model, spec, identity, size, len(decoded.pixels), cache_dir=cache_dir).forward(view)

    found, cached = cached_features(forward, decoded.pixels, keys, [ORIGINAL], cache_dir, stop=stop, on_progress=progress("features"))
    mirrored = FeatureCache(cache_dir).load(keys[MIRRORED])  # used when a run or the advice computed them already
    return found[ORIGINAL], mirrored if mirrored is not None and len(mirrored) == len(records) else None, size, cached, failed
