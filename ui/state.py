"""The session state the pages share: its keys, set up once, and the results that belong to one dataset.

``app.py`` calls ``set_up`` on every run; pages read the keys below. A result
computed for a dataset (the measured advice, a comparison, the label report)
is kept as a ``DatasetResult`` that names the dataset it describes, so a page
never shows the advice of the folder loaded before; ``use_dataset`` clears
everything that described the previous data.
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from dataclasses import dataclass

# What every page may read (None until set).
SHARED_KEYS = (
    "data_dir",  # the folder of the dataset in use
    "dataset",  # its scan (tl_core.data.records.Dataset)
    "similarity",  # the user's answer on the Scenario page: "high", "low" or None
    "recommendation",  # the Scenario page's recommendation (tl_core.advice.scenario.Recommendation)
    "chosen_strategy",  # the strategy adopted on the Scenario page (Setup's default)
    "chosen_backbone",  # the network adopted with it, where the advice chose another (a joined one)
    "train_config",  # the settings chosen on the Setup page
    "job",  # this session's training job (at most one runs at a time)
    "run_dir",  # the run the Evaluate and Export pages show
    "adopted_run",  # the finished job's run once it became run_dir (once only: a run reopened later stays shown)
)
# Results that describe one dataset, each kept as a DatasetResult.
ADVICE, COMPARISON, LABEL_REPORT = "advice", "comparison", "label_report"
# What a new dataset makes stale.
STALE_WITH_THE_DATA = ("similarity", "recommendation", "chosen_strategy", "chosen_backbone", "train_config", LABEL_REPORT)
# What new label decisions make stale (the labels changed, the folder did not).
STALE_WITH_THE_LABELS = ("similarity", "recommendation", "chosen_strategy", "chosen_backbone", "train_config")


@dataclass(frozen=True)
class DatasetResult:
    """A result computed for one dataset.

    Attributes:
        dataset: What identifies the dataset (its fingerprint, or its folder for a result that
            survives label decisions).
        value: The result.
        labels: The dataset's fingerprint when the result was computed (for a result keyed by folder:
            whether the labels changed since).
    """

    dataset: str
    value: object
    labels: str = ""


def set_up(state: MutableMapping, engine: Callable[[], object], workspace: Callable[[], object]) -> None:
    """Gives every shared key its starting value once per session; ``engine`` and ``workspace`` make the session's own."""
    if "engine" not in state:
        state["engine"] = engine()
    if "workspace" not in state:
        state["workspace"] = workspace()
    for key in (*SHARED_KEYS, ADVICE, COMPARISON, LABEL_REPORT):
        state.setdefault(key, None)


def remember(state: MutableMapping, name: str, dataset: str, value: object, labels: str = "") -> None:
    """Keeps ``value`` as the ``name`` result of the dataset identified by ``dataset``."""
    state[name] = DatasetResult(dataset, value, labels)


def recall(state: MutableMapping, name: str, dataset: str) -> DatasetResult | None:
    """The ``name`` result of this dataset, or None (a result of another dataset does not count)."""
    stored = state.get(name)
    return stored if isinstance(stored, DatasetResult) and stored.dataset == dataset else None


def recalled_value(state: MutableMapping, name: str, dataset: str):
    """The value of ``recall``, or None."""
    stored = recall(state, name, dataset)
    return stored.value if stored is not None else None


def use_dataset(state: MutableMapping, folder: str, dataset) -> None:
    """Makes ``dataset`` (scanned from ``folder``) the session's data; what described the previous data is cleared."""
    state["data_dir"], state["dataset"] = str(folder), dataset
    for key in STALE_WITH_THE_DATA:
        state[key] = None


def relabelled(state: MutableMapping, dataset) -> None:
    """The same folder scanned again after label decisions: the results that depended on the labels are cleared."""
    state["dataset"] = dataset
    for key in STALE_WITH_THE_LABELS:
        state[key] = None
