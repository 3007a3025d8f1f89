"""Training again from an earlier run, typically after adding images to the folder.

Every run folder holds ``images.json``: each image it used, with its split,
its file size and modification time, and its row in the run's decoded-image
cache; ``run.json`` names the cache entries (``cache_keys``). A new run with
``from_run`` set (``python -m tl_core train DATA --from-run RUN_DIR``, or
*Train again* on the History page) then:

- starts from the earlier run's settings (``config_from_run``);
- keeps every earlier image in the split it had (``Dataset.with_earlier_splits``),
  so images held out before never move into training;
- takes the decoded pixels and bottleneck features of the images that are
  unchanged from the earlier run's cache entries, and decodes and runs the
  backbone on the new or changed images only (``tl_core.training``);
- starts from the earlier run's trained weights when the classes are the same:
  the head for feature extraction; for the strategies that train backbone
  layers the whole model, so fine-tuning goes on from it without a warm-up.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from tl_core.config import TrainConfig
from tl_core.errors import RunError

IMAGES_FILE = "images.json"


@dataclass(frozen=True)
class EarlierRun:
    """What a new run takes from an earlier one.

    Attributes:
        run_dir: The earlier run folder.
        summary: Its ``run.json``.
        images: Each image path it used: ``split``, ``size`` (bytes), ``mtime`` (ns) and ``row`` in its decoded-image cache entry.
        class_names: Its classes, in the model's output order.
    """

    run_dir: Path
    summary: dict
    images: dict[str, dict]
    class_names: list[str]

    @property
    def cache_keys(self) -> dict:
        return self.summary.get("cache_keys") or {}

    @property
    def splits(self) -> dict[str, str]:
        return {path: entry["split"] for path, entry in self.images.items()}


def load_earlier_run(run_dir: str | os.PathLike) -> EarlierRun:
    """Reads what ``from_run`` needs from a run folder.

    Raises:
        RunError: When the folder lacks ``run.json`` or ``images.json`` (a run from an older version, or not a run folder).
    """
    folder = Path(run_dir).expanduser()
    try:
        summary = json.loads((folder / "run.json").read_text(encoding="utf-8"))
        rows = json.loads((folder / IMAGES_FILE).read_text(encoding="utf-8"))
        images = {row["path"]: {"split": row["split"], "size": row["size"], "mtime": row["mtime"], "row": row["row"]} for row in rows}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunError(
            f"'{folder}' cannot be trained again from: it has no readable run.json and {IMAGES_FILE} ({' '.join(str(error).split())[:200]}). "
            "Pick a run made by this version (see 'python -m tl_core runs'), or train without --from-run."
        ) from error
    return EarlierRun(folder, summary, images, list(summary.get("data", {}).get("class_names", [])))


def images_manifest(records, row_of: dict[str, int]) -> list[dict]:
    """The rows of ``images.json``: every image a run used, with what ``from_run`` needs to reuse it."""
    return [
        {"path": record.path, "class": record.class_name, "split": record.split, "size": record.file_size, "mtime": record.modified_ns, "row": row_of[record.path]}
        for record in records
    ]


def config_from_run(run_dir: str | os.PathLike, data_dir: str, out_dir: str, **changes) -> TrainConfig:
    """The earlier run's settings for a new run on ``data_dir`` (with ``changes``), training again from it.

    Raises:
        RunError: When the run folder has no readable ``run.json`` with its settings.
    """
    folder = Path(run_dir).expanduser()
    try:
        settings = json.loads((folder / "run.json").read_text(encoding="utf-8"))["config"]
        config = TrainConfig.from_dict(settings)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise RunError(f"'{folder}' has no readable run.json with the run's settings ({' '.join(str(error).split())[:200]}). Pick another run.") from error
    return TrainConfig.from_dict({**config.to_dict(), "data_dir": str(data_dir), "out_dir": str(out_dir), "from_run": str(folder), **changes})
