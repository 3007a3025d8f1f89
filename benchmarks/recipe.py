"""The articles' recipe, as a reader would type it: the baseline of the whole-process speed benchmark.

    python -m benchmarks.recipe DATA [--image-size 224] [--seed 0]

``DATA`` holds ``train/<class>/`` and ``val/<class>/`` (``benchmarks.first_model``
makes that layout for a folder without it). The recipe: Keras' folder loader,
MobileNetV2 with ImageNet weights as a frozen feature extractor through
``model.predict``, and a logistic-regression head from scikit-learn, evaluated
on ``val/``. It imports nothing from ``tl_core``: this is what a user of the
articles runs, timed as a whole process by the caller. The last line printed
is a JSON object with the held-out accuracy and the seconds of each step.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recipe", description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seed", type=int, default=0)
    arguments = parser.parse_args(argv)
    started = time.perf_counter()
    import keras
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    size = arguments.image_size
    loader = {"image_size": (size, size), "batch_size": 32, "label_mode": "int", "shuffle": False, "verbose": False}
    train = keras.utils.image_dataset_from_directory(arguments.data / "train", **loader)
    held_out = keras.utils.image_dataset_from_directory(arguments.data / "val", **loader, class_names=train.class_names)
    base = keras.applications.MobileNetV2(include_top=False, weights="imagenet", input_shape=(size, size, 3), pooling="avg")
    preprocess = keras.applications.mobilenet_v2.preprocess_input
    features_started = time.perf_counter()
    features = {name: base.predict(data.map(lambda images, labels: preprocess(images)), verbose=0) for name, data in (("train", train), ("val", held_out))}
    labels = {name: np.concatenate([batch.numpy() for _, batch in data]) for name, data in (("train", train), ("val", held_out))}
    head_started = time.perf_counter()
    head = LogisticRegression(max_iter=1000, random_state=arguments.seed).fit(features["train"], labels["train"])
    accuracy = float((head.predict(features["val"]) == labels["val"]).mean())
    finished = time.perf_counter()
    print(json.dumps({
        "accuracy": accuracy, "train_images": len(labels["train"]), "held_out_images": len(labels["val"]),
        "seconds": {"load": round(features_started - started, 2), "features": round(head_started - features_started, 2), "head": round(finished - head_started, 2)},
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
