"""The four-scenario decision matrix: dataset size x similarity to the pretraining data.

=========  ======================  ========================================
scenario   data                    strategy
=========  ======================  ========================================
1          small, similar          feature extraction (train only a new head)
2          small, dissimilar       fine-tune with the first K layers frozen
                                   (or: transfer may barely help; measure it)
3          large, dissimilar       train from scratch, or fine-tune everything
4          large, similar          fine-tune the whole network at a low rate
=========  ======================  ========================================

Size is measured here from the dataset. Similarity is given (by the user,
for now); the recommendation records where it came from so a measured value
can take its place without changing callers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tl_core.data.records import Dataset

# A class with fewer training images than this is "small" data for a pretrained
# network with millions of weights: retraining many of them would overfit.
SMALL_IMAGES_PER_CLASS = 1000

SCENARIOS = {
    1: {"size": "small", "similarity": "high", "strategy": "feature_extraction", "title": "Small data, similar to ImageNet"},
    2: {"size": "small", "similarity": "low", "strategy": "fine_tune", "title": "Small data, unlike ImageNet"},
    3: {"size": "large", "similarity": "low", "strategy": "from_scratch", "title": "Large data, unlike ImageNet"},
    4: {"size": "large", "similarity": "high", "strategy": "full_fine_tune", "title": "Large data, similar to ImageNet"},
}

SCENARIO_ADVICE = {
    1: "Keep the pretrained network as it is and train only a new head on its features. With little data, "
    "retraining more weights would mostly memorise the training images; the pretrained features already fit.",
    2: "Keep the early, generic layers (edges, textures) frozen and retrain the later, ImageNet-specific ones at a low "
    "learning rate. A second view: with data this small and this different, transfer may help little and a smaller "
    "model trained for the task can do as well. Compare both on your data before trusting either.",
    3: "There is enough data to train the whole network. Starting from random weights is an option because the data differs "
    "from ImageNet, but starting from the pretrained weights rarely hurts and usually converges faster.",
    4: "Keep the architecture and the pretrained weights and fine-tune the whole network at a low learning rate: there is "
    "enough data to adjust every layer without overfitting, and the pretrained start is close to the goal.",
}


@dataclass(frozen=True)
class SizeVerdict:
    """Whether a dataset counts as small, and the numbers behind it."""

    size: str
    images_per_class: float
    smallest_class: int
    train_images: int
    threshold: int
    reason: str


@dataclass(frozen=True)
class Recommendation:
    """Where a dataset sits in the matrix and what to do about it.

    Attributes:
        scenario: 1-4 (see the module docstring).
        size: ``"small"`` or ``"large"``.
        similarity: ``"high"`` or ``"low"``.
        similarity_source: ``"user"`` when the user said it, ``"measured"`` when measured.
        similarity_score: The measured score in [0, 1], when measured.
        strategy: The recommended strategy name.
        reasons: Plain sentences explaining the recommendation, with the numbers.
        alternatives: For each other scenario: what it would mean for this data.
    """

    scenario: int
    size: str
    similarity: str
    similarity_source: str
    strategy: str
    reasons: list[str]
    alternatives: dict[int, str] = field(default_factory=dict)
    similarity_score: float | None = None
    size_verdict: SizeVerdict | None = None

    @property
    def title(self) -> str:
        return SCENARIOS[self.scenario]["title"]

    def to_dict(self) -> dict:
        return asdict(self)


def classify_size(dataset: Dataset, threshold: int = SMALL_IMAGES_PER_CLASS) -> SizeVerdict:
    """Calls a dataset small when its training split has fewer than ``threshold`` images per class on average."""
    counts = dataset.counts().get("train", {})
    train_images = sum(counts.values())
    per_class = train_images / max(len(counts), 1)
    smallest = min(counts.values()) if counts else 0
    size = "small" if per_class < threshold else "large"
    comparison = "fewer than" if size == "small" else "at or above"
    reason = (
        f"{train_images:,} training images in {len(counts)} classes: {per_class:,.0f} per class on average, "
        f"{comparison} the rule of thumb of {threshold:,} per class, below which retraining a pretrained network's millions of weights tends to overfit."
    )
    return SizeVerdict(size, per_class, smallest, train_images, threshold, reason)


def candidate_strategies(scenario: int) -> list[str]:
    """The strategies worth weighing in a scenario: the cheap one, its own, its neighbours, and for dissimilar data training from scratch.

    Feature extraction is always among them: it is the cheapest, and its measured
    accuracy is the bar every other strategy has to clear.
    """
    return {
        1: ["feature_extraction", "fine_tune"],
        2: ["feature_extraction", "fine_tune", "from_scratch"],
        3: ["feature_extraction", "fine_tune", "full_fine_tune", "from_scratch"],
        4: ["feature_extraction", "fine_tune", "full_fine_tune"],
    }[scenario]


def scenario_number(size: str, similarity: str) -> int:
    """The matrix cell: 1 small+similar, 2 small+dissimilar, 3 large+dissimilar, 4 large+similar."""
    for number, cell in SCENARIOS.items():
        if cell["size"] == size and cell["similarity"] == similarity:
            return number
    raise ValueError(f"No scenario for size {size!r} and similarity {similarity!r}; expected small/large and high/low.")


def recommend(dataset: Dataset, similarity: str, similarity_source: str = "user", similarity_score: float | None = None) -> Recommendation:
    """Places the dataset in the matrix and explains the recommended strategy.

    Args:
        dataset: The scanned dataset (its size is measured).
        similarity: ``"high"`` or ``"low"``: how much the images resemble ImageNet photos.
        similarity_source: Who decided the similarity (``"user"`` or ``"measured"``).
        similarity_score: The measured score, when there is one.

    Returns:
        The recommendation with its reasons and the alternatives.
    """
    verdict = classify_size(dataset)
    number = scenario_number(verdict.size, similarity)
    if similarity_source == "measured" and similarity_score is not None:
        similarity_reason = f"Measured similarity to ImageNet: {similarity_score:.2f} on a 0-1 scale, so {similarity}."
    else:
        similarity_reason = f"You judged the images {'similar' if similarity == 'high' else 'unlike'} to everyday photos of the kind ImageNet holds."
    reasons = [verdict.reason, similarity_reason, SCENARIO_ADVICE[number]]
    if verdict.smallest_class < 20:
        reasons.append(f"The smallest class has only {verdict.smallest_class} training images; more images of it will help more than any strategy.")
    alternatives = {other: SCENARIO_ADVICE[other] for other in SCENARIOS if other != number}
    return Recommendation(
        scenario=number,
        size=verdict.size,
        similarity=similarity,
        similarity_source=similarity_source,
        strategy=SCENARIOS[number]["strategy"],
        reasons=reasons,
        alternatives=alternatives,
        similarity_score=similarity_score,
        size_verdict=verdict,
    )
