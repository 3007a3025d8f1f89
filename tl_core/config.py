"""The settings of a training run, and their limits.

Limits are data (``_NUMBER_LIMITS``), checked in one place before any work
starts, and every message names the option, the value found, what is
allowed and an example.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace

from tl_core.errors import ConfigError


@dataclass(frozen=True)
class AugmentConfig:
    """Random changes applied to training images (only the training split, only while training).

    Attributes:
        flip: ``"horizontal"``, ``"vertical"``, ``"horizontal_and_vertical"`` or ``"none"``.
        rotation: Largest rotation as a fraction of a full turn (0.1 = up to 36 degrees either way).
        zoom: Largest zoom in or out, as a fraction of the image size.
        translation: Largest shift, as a fraction of width and height.
        contrast: Largest contrast change, as a fraction.
        turns: Turned images (a quarter, half or three-quarter turn) show the same class, as in aerial and
            microscope images or surfaces, where up is anywhere. With left-right flips, feature extraction then
            learns from, and averages its answers over, all eight turned and mirrored views of each image
            (``tl_core.features.TURNED_VIEWS``); image-training strategies add a random number of quarter turns to
            each training image's random changes, and average their answers over the eight views at test time.
            None: off, except that ``auto`` follows the advice's measurement (``Measurement.turns_keep_class``).
    """

    flip: str = "horizontal"
    rotation: float = 0.1
    zoom: float = 0.2
    translation: float = 0.1
    contrast: float = 0.2
    turns: bool | None = None

    @property
    def mirrors(self) -> bool:
        """Whether the flips include left-right mirror images (so a mirror image is an example of the same class)."""
        return self.flip in MIRRORING_FLIPS

    def to_dict(self) -> dict:
        return asdict(self)


FLIP_MODES = ("horizontal", "vertical", "horizontal_and_vertical", "none")
MIRRORING_FLIPS = ("horizontal", "horizontal_and_vertical")


SCHEDULES = ("cosine", "constant")
# Files that run without Keras, written beside model.h5 (tl_core.runs.portable makes and checks them).
EXPORT_FORMATS = ("tflite", "int8", "onnx")
# None by default: the model (model.h5, model.keras) is what a run is for; converting it took a quarter of a first
# run on a CPU. The Export page and `python -m tl_core export RUN --format ...` make these files when asked.
DEFAULT_FORMATS: tuple[str, ...] = ()
FORMATS_VARIABLE = "TL_CORE_EXPORT_FORMATS"  # e.g. "tflite,onnx,int8", or "none"
STRATEGIES = ("feature_extraction", "fine_tune", "full_fine_tune", "from_scratch")
# Strategies whose head first warms up on cached features before backbone layers train on the images.
WARMUP_STRATEGIES = ("fine_tune", "full_fine_tune")
# Strategies whose every epoch is a pass of the network over the images (not over cached features).
IMAGE_TRAINING_STRATEGIES = ("fine_tune", "full_fine_tune", "from_scratch")
# With this ratio of the largest class's images to the smallest's, class weights are on unless the user says otherwise.
IMBALANCE_FOR_CLASS_WEIGHTS = 3.0
AUTO_STRATEGY = "auto"  # measure the data first and follow the advice (tl_core.advice.advise)

# The recipe of each strategy: the settings left unset (None) in a TrainConfig take these values.
# Measured in benchmarks.quality; docs/benchmarks.md has the table behind each choice.
RECIPES: dict[str, dict[str, object]] = {
    # The head is a linear layer on cached features: hundreds of epochs take seconds, and it needs them to converge on small data.
    "feature_extraction": {"epochs": 200, "warmup_epochs": 0, "early_stopping_patience": 20, "learning_rate_schedule": "constant", "test_time_flip": True},
    # A converged head first (cheap, on cached features), then the unfrozen layers at a tenth of the rate, warmed up and decayed.
    # The warm-up runs until the head's validation loss stops improving (at most 200 epochs, seconds on cached features).
    "fine_tune": {"epochs": 8, "warmup_epochs": 200, "early_stopping_patience": 10, "learning_rate_schedule": "cosine", "test_time_flip": True},
    "full_fine_tune": {"epochs": 8, "warmup_epochs": 200, "early_stopping_patience": 10, "learning_rate_schedule": "cosine", "test_time_flip": True},
    "from_scratch": {"epochs": 30, "warmup_epochs": 0, "early_stopping_patience": 10, "learning_rate_schedule": "cosine", "test_time_flip": True},
}
# The quick variant of each recipe: fewer passes over the images, for a first look in a fraction of the time.
QUICK_RECIPES: dict[str, dict[str, object]] = {
    "feature_extraction": {"test_time_flip": False},  # and no mirror images: one pass of the backbone per image
    "fine_tune": {"epochs": 3, "test_time_flip": False},
    "full_fine_tune": {"epochs": 3, "test_time_flip": False},
    "from_scratch": {"epochs": 10, "test_time_flip": False},
}

STRATEGY_TITLES = {
    "feature_extraction": "Feature extraction",
    "fine_tune": "Fine-tuning with the first layers frozen",
    "full_fine_tune": "Full fine-tuning",
    "from_scratch": "Training from scratch",
}

# Short names for running text ("feature extraction is faster than fine-tuning").
STRATEGY_NAMES = {
    "feature_extraction": "feature extraction",
    "fine_tune": "fine-tuning",
    "full_fine_tune": "full fine-tuning",
    "from_scratch": "training from scratch",
}

STRATEGY_DESCRIPTIONS = {
    "feature_extraction": "backbone frozen; its pooled features are computed once and cached, and only a new head is trained on them",
    "fine_tune": "the first K backbone layers frozen, the rest retrained at a low learning rate after a warm-up of the head",
    "full_fine_tune": "every backbone layer retrained at a low learning rate after a warm-up of the head",
    "from_scratch": "same architecture with random weights, everything trained from the start",
}

# option name -> (lowest allowed, highest allowed, example)
_NUMBER_LIMITS: dict[str, tuple[float, float, str]] = {
    "epochs": (1, 10_000, "10"),
    "warmup_epochs": (0, 10_000, "5"),
    "batch_size": (1, 4096, "32"),
    "learning_rate": (1e-7, 1.0, "0.001"),
    "fine_tune_learning_rate": (1e-8, 1.0, "0.0001"),
    "image_size": (32, 1024, "224"),
    "augment_views": (0, 50, "2"),
    "head_units": (0, 16_384, "0 or 256"),
    "dropout": (0.0, 0.95, "0.2"),
    "label_smoothing": (0.0, 0.5, "0.1"),
    "early_stopping_patience": (0, 10_000, "5 (0 turns early stopping off)"),
    "val_fraction": (0.01, 0.9, "0.15"),
    "test_fraction": (0.0, 0.9, "0.15 (0 to evaluate on validation)"),
    "memory_budget_mb": (0, 1_048_576, "2048"),
    "max_train_images_per_class": (1, 10_000_000, "100"),
    "time_budget_minutes": (0.5, 100_000, "10"),
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a run does.

    Attributes:
        data_dir: Folder of labelled images (see ``tl_core.data.scan_dataset``).
        out_dir: Run folder that receives the model files and reports.
        backbone: Name in the backbone table (``python -m tl_core backbones``).
        weights: ``"imagenet"``, ``"none"`` or a weights file path.
        strategy: One of ``STRATEGIES``.
        freeze_layers: For ``fine_tune``: how many backbone layers stay frozen
            (None: the first two thirds of its blocks).
        epochs: Epochs of the main training phase (None: the strategy's recipe, see ``RECIPES``).
        warmup_epochs: Head-only epochs on cached features before fine-tuning (0 to skip; None: the recipe's).
        image_size: Side of the square input; None for the backbone's default.
        batch_size: Images per training step.
        learning_rate: Learning rate of the head (and of training from scratch).
        fine_tune_learning_rate: Learning rate when backbone layers train; None for
            ``learning_rate / 10``.
        augment: Randomly change training images. Feature extraction can only use
            augmentation through ``augment_views`` cached augmented copies.
        augment_views: Augmented copies of the training images whose features are
            cached for feature extraction (0: none).
        augmentation: What the random changes are.
        head_units: Width of an optional hidden layer in the head (0: none).
        dropout: Dropout rate in the head.
        label_smoothing: Share of each training target spread over all classes (0: none);
            reported losses are plain cross-entropy either way.
        learning_rate_schedule: ``"cosine"`` (warm-up over the first epoch, then cosine
            decay) or ``"constant"``, for the phases that train backbone layers (None: the recipe's).
        test_time_flip: Average each prediction over the image and its mirror image, in
            the evaluation and inside the exported model (only when the augmentation
            flips left to right, so mirror images are valid examples of the class; None: the recipe's).
        class_weights: Weight the loss by inverse class frequency (for imbalanced data); None: on when the
            largest class has at least ``IMBALANCE_FOR_CLASS_WEIGHTS`` times the images of the smallest
            (``class_weights_default``, decided when the data is scanned).
        early_stopping_patience: Epochs without a better validation loss before
            stopping (0: never stop early; None: the recipe's). The best epoch's weights are kept either way.
        seed: Seed of the split, the initial weights, shuffling and augmentation.
        val_fraction: Share of each class kept for validation when the data has no val/ folder.
        test_fraction: Share of each class kept for testing when the data has no split folders.
        cache_dir: Where decoded images and features are cached (None: the default).
        memory_budget_mb: Decoded images up to this size (in MiB, 2^20 bytes) are held in memory, larger
            sets are read from the disk cache.
        max_train_images_per_class: Train on at most this many images per class (a
            seeded subsample of the training split, for quick comparisons); None for all.
        quick: Settings left at None take the quick variant of the recipe (``QUICK_RECIPES``).
        time_budget_minutes: For ``auto``: the advice recommends no strategy it expects to
            take longer, and fits fine-tuning's epochs into it.
        export_formats: Files beside ``model.h5`` that run without Keras, each checked
            against the Keras model (``EXPORT_FORMATS``: ``tflite``, ``int8``,
            ``onnx``; None: ``default_formats()``, which is none unless ``TL_CORE_EXPORT_FORMATS``
            names some; ``()``: none). Made after the model files are written.
        from_run: An earlier run folder to train again from (``tl_core.training.reuse``): its images
            keep their split, its decoded images and features are reused for the images
            still there, and training starts from its weights (the head, or the whole model when fine-tuning).
        centre_crop: Train on, and answer from, the middle of each image (``tl_core.data.images.CENTRE_SHARE`` of each
            side): the saved model takes images of ``framed_size(image_size)`` and keeps their middle ``image_size``
            pixels. Objects photographed in the middle of the frame gain; scenes and surfaces, whose edges matter, lose.
            None: off, except that ``auto`` follows the advice's measurement (``Advice.centre_crop``).
    """

    data_dir: str
    out_dir: str
    backbone: str = "mobilenet_v2"
    weights: str = "imagenet"
    strategy: str = "feature_extraction"
    freeze_layers: int | None = None
    epochs: int | None = None
    warmup_epochs: int | None = None
    image_size: int | None = None
    batch_size: int = 32
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float | None = None
    augment: bool = True
    augment_views: int = 0
    augmentation: AugmentConfig = field(default_factory=AugmentConfig)
    head_units: int = 0
    dropout: float = 0.2
    label_smoothing: float = 0.0
    learning_rate_schedule: str | None = None
    test_time_flip: bool | None = None
    class_weights: bool | None = None
    early_stopping_patience: int | None = None
    seed: int = 0
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    cache_dir: str | None = None
    memory_budget_mb: int = 2048
    max_train_images_per_class: int | None = None
    quick: bool = False
    time_budget_minutes: float = 10.0
    export_formats: tuple[str, ...] | None = None
    from_run: str | None = None
    centre_crop: bool | None = None

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """A config from ``to_dict``'s output (a run's ``run.json``); settings this version does not know are left out."""
        known = {item.name for item in fields(cls)}
        settings = {name: value for name, value in values.items() if name in known}
        if isinstance(settings.get("augmentation"), dict):
            augmentation_fields = {item.name for item in fields(AugmentConfig)}
            settings["augmentation"] = AugmentConfig(**{name: value for name, value in settings["augmentation"].items() if name in augmentation_fields})
        if settings.get("export_formats") is not None:
            settings["export_formats"] = tuple(settings["export_formats"])
        return cls(**settings)

    def validated(self) -> TrainConfig:
        """Checks every option against its limits; returns the config with the strategy normalised and the recipe filled in.

        Settings left at None take the values of the strategy's recipe (``RECIPES``);
        for ``auto`` they stay None until the strategy is chosen.

        Raises:
            ConfigError: Naming the first option that is out of range and what is allowed.
        """
        strategy = self.strategy.strip().lower().replace("-", "_")
        if strategy not in STRATEGIES + (AUTO_STRATEGY,):
            raise ConfigError(f"Unknown strategy '{self.strategy}'. Choose one of: {', '.join(STRATEGIES + (AUTO_STRATEGY,))}.")
        for name, (low, high, example) in _NUMBER_LIMITS.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ConfigError(f"{name} is {value!r} while it must be between {low:g} and {high:g}. Use e.g. {example}.")
        if self.learning_rate_schedule is not None and self.learning_rate_schedule not in SCHEDULES:
            raise ConfigError(f"learning_rate_schedule is {self.learning_rate_schedule!r} while it must be one of {', '.join(SCHEDULES)}.")
        if self.freeze_layers is not None and self.freeze_layers < 0:
            raise ConfigError(f"freeze_layers is {self.freeze_layers} while it must be 0 or more (layers of the backbone kept frozen).")
        if self.freeze_layers is not None and strategy not in ("fine_tune", AUTO_STRATEGY):
            raise ConfigError(
                f"freeze_layers is set ({self.freeze_layers}) but strategy is '{strategy}'; freezing only applies to fine_tune. "
                "Use --strategy fine_tune, or drop --freeze."
            )
        if strategy not in ("feature_extraction", AUTO_STRATEGY) and _joined(self.backbone):
            raise ConfigError(
                f"The backbone '{self.backbone}' joins two networks' features, so it can only extract features (strategy '{strategy}' trains the backbone). "
                "Use --strategy feature_extraction, or choose one network (e.g. mobilenet_v2) to fine-tune."
            )
        if strategy == "from_scratch" and self.weights.strip().lower() not in ("imagenet", "none"):
            raise ConfigError("strategy from_scratch starts from random weights, so --weights PATH cannot be used with it. Use --strategy fine_tune or drop --weights.")
        formats = default_formats() if self.export_formats is None else parse_formats(self.export_formats)
        return with_recipe(replace(self, strategy=strategy, export_formats=formats))

    @property
    def crops_centre(self) -> bool:
        """Images are read as their middles (``centre_crop`` is on)."""
        return bool(self.centre_crop)

    @property
    def input_size(self) -> int | None:
        """The side of the images the saved model takes: ``image_size``, or the larger frame whose middle it keeps."""
        from tl_core.data.images import framed_size

        return framed_size(self.image_size) if self.crops_centre and self.image_size else self.image_size

    @property
    def uses_warmup(self) -> bool:
        """The head warms up on cached features before backbone layers train (fine-tuning)."""
        return self.strategy in WARMUP_STRATEGIES

    @property
    def trains_on_images(self) -> bool:
        """Every epoch of the main phase is a pass of the network over the images (fine-tuning, training from scratch)."""
        return self.strategy in IMAGE_TRAINING_STRATEGIES

    @property
    def uses_features(self) -> bool:
        """The run computes the frozen backbone's features: for feature extraction, or for the head's warm-up."""
        return self.strategy != "from_scratch"

    @property
    def mirrors(self) -> bool:
        """Mirror images are examples of the same class here: the flips setting includes left-right (whether or not augmentation is on)."""
        return self.augmentation.mirrors

    @property
    def uses_test_time_flip(self) -> bool:
        """Predictions average the image and its mirror image (asked for, and mirror images are valid examples)."""
        return bool(self.test_time_flip) and self.mirrors

    @property
    def mirrored_features(self) -> bool:
        """Feature extraction caches the mirror images' features too: a training view, and for the test-time flip.

        The quick recipe skips them unless test-time flip is asked for: one pass of the backbone per image.
        """
        if self.strategy != "feature_extraction" or not self.mirrors:
            return False
        return self.uses_test_time_flip or (self.augment and not self.quick)

    @property
    def extra_feature_views(self) -> list[str]:
        """The views whose features feature extraction adds after its first model, where they pay: the mirror images, and the turned views with ``turns``."""
        from tl_core.features import extra_views

        return extra_views(True, bool(self.augmentation.turns)) if self.mirrored_features else []

    @property
    def head_epochs(self) -> int:
        """Epochs of the head on cached features: all of feature extraction, or fine-tuning's warm-up."""
        if self.strategy == "feature_extraction":
            return self.epochs or 0
        return (self.warmup_epochs or 0) if self.uses_warmup else 0

    @property
    def planned_epochs(self) -> int:
        """Epochs at most, over all phases (the warm-up's count is an upper bound: it ends when the head stops improving)."""
        return (self.epochs or 0) + ((self.warmup_epochs or 0) if self.uses_warmup else 0)

    @property
    def planned_phase_epochs(self) -> dict[str, int]:
        """The most epochs each phase of epochs runs, by the phase's name in the run's history (``head``, ``fine_tune``, ``from_scratch``)."""
        phases = {"head": self.head_epochs} if self.head_epochs else {}
        if self.trains_on_images and self.epochs:
            phases["from_scratch" if self.strategy == "from_scratch" else "fine_tune"] = self.epochs
        return phases

    @property
    def recipe_settings(self) -> dict[str, object]:
        """The settings a recipe decides, as this config has them."""
        return {name: getattr(self, name) for name in RECIPES["fine_tune"]}

    @property
    def backbone_learning_rate(self) -> float:
        return self.fine_tune_learning_rate if self.fine_tune_learning_rate is not None else self.learning_rate / 10

    def to_dict(self) -> dict:
        return asdict(self)


def class_weights_default(imbalance_ratio: float) -> bool:
    """Whether class weights are on when the user does not say: from ``IMBALANCE_FOR_CLASS_WEIGHTS`` times more images in the largest class."""
    return imbalance_ratio >= IMBALANCE_FOR_CLASS_WEIGHTS


def with_recipe(config: TrainConfig) -> TrainConfig:
    """``config`` with every recipe setting left at None taken from its strategy's recipe (its quick variant when ``config.quick``).

    A config with the strategy ``auto`` is returned as it is: its recipe is known once the strategy is chosen.
    """
    strategy = config.strategy.strip().lower().replace("-", "_")
    if strategy not in RECIPES:
        return config
    recipe = recipe_defaults(strategy, config.quick)
    return replace(config, **{name: value for name, value in recipe.items() if getattr(config, name) is None})


def recipe_defaults(strategy: str, quick: bool = False) -> dict[str, object]:
    """The values a strategy's recipe (or its quick variant) gives the settings it decides."""
    return {**RECIPES[strategy], **(QUICK_RECIPES[strategy] if quick else {})}


def recipe_description(strategy: str, quick: bool = False) -> str:
    """What a strategy's recipe (or its quick variant) does, in words, with the numbers of ``RECIPES``."""
    recipe = recipe_defaults(strategy, quick)
    epochs, schedule = recipe["epochs"], recipe["learning_rate_schedule"]
    decay = ", warmed up over the first epoch and decayed to the end" if schedule == "cosine" else " at a constant rate"
    if strategy == "feature_extraction":
        text = f"The head trains on cached features until its validation loss stops improving (up to {epochs} epochs: seconds)."
        if quick:
            return text + " Quick: no mirror images, so each image goes through the backbone once, and no test-time flip."
        return text + (
            " With left-right flips, the first model is saved, and then, where its validation errors say they can pay, the mirror images'"
            " features train it on (a second pass of the backbone), and its answer for each image is averaged with the mirror image's."
        )
    if strategy in WARMUP_STRATEGIES:
        layers = "the unfrozen layers train" if strategy == "fine_tune" else "every layer trains"
        text = (
            f"First the head converges on cached features (a warm-up of at most {recipe['warmup_epochs']} epochs, stopped when its validation loss stops "
            f"improving), then {layers} on augmented images for {epochs} epochs at a tenth of the learning rate{decay}; "
            "the epoch with the lowest validation loss is kept."
        )
    else:
        text = f"Every layer trains from random weights on augmented images for {epochs} epochs, the learning rate{decay}; the epoch with the lowest validation loss is kept."
    return text + (" Quick: fewer epochs and no test-time flip." if quick else "")


def epochs_plan(config: TrainConfig) -> str:
    """The epochs a config plans, phase by phase, in words (the Setup and Train pages say it the same way).

    ``a warm-up of the head on cached features (at most 200 epochs, until its validation loss stops
    improving), then 8 epochs of fine-tuning``.
    """
    stop = " until its validation loss stops improving" if config.early_stopping_patience else ""
    head = f"at most {config.head_epochs} epoch{'s' if config.head_epochs != 1 else ''},{stop}" if stop else f"{config.head_epochs} epochs"
    if config.strategy == "feature_extraction":
        if _joined(config.backbone):  # tl_core.models.build.joined_head
            return f"a head per network on cached features, their answers averaged ({head})"
        return f"the head on cached features ({head})"
    at_most = "at most " if config.early_stopping_patience and config.early_stopping_patience < (config.epochs or 0) else ""
    main = f"{at_most}{config.epochs} epoch{'s' if config.epochs != 1 else ''} of {'training from scratch' if config.strategy == 'from_scratch' else 'fine-tuning'}"
    if config.uses_warmup and config.head_epochs:
        return f"a warm-up of the head on cached features ({head}), then {main}"
    return main


def default_formats() -> tuple[str, ...]:
    """The formats every run writes: ``TL_CORE_EXPORT_FORMATS`` when set (``none`` for none), else ``DEFAULT_FORMATS``."""
    text = os.environ.get(FORMATS_VARIABLE)
    return DEFAULT_FORMATS if text is None else parse_formats(text)


def parse_formats(text: str | Sequence[str]) -> tuple[str, ...]:
    """``"tflite, onnx"`` or ``["tflite", "onnx"]`` as a checked tuple; ``none`` or nothing gives ``()``.

    Raises:
        ConfigError: Naming a format that does not exist.
    """
    parts = text.replace(",", " ").split() if isinstance(text, str) else [str(part) for part in text]
    formats = []
    for part in (part.strip().lower() for part in parts):
        if part in ("", "none"):
            continue
        if part not in EXPORT_FORMATS:
            raise ConfigError(f"Unknown export format '{part}'. Choose from: {', '.join(EXPORT_FORMATS)} (or none).")
        if part not in formats:
            formats.append(part)
    return tuple(formats)


def _joined(backbone: str) -> bool:
    """Whether ``backbone`` names a joined backbone (an unknown name is left to the run's own message)."""
    from tl_core.models.backbones import get_backbone

    try:
        return get_backbone(backbone).joined
    except ConfigError:
        return False
