"""The session state the pages share: results kept per dataset, and what new data or new labels make stale."""

from __future__ import annotations

from ui import state as session


def test_a_result_of_another_dataset_is_never_recalled() -> None:
    state = {}
    session.set_up(state, engine=lambda: "engine", workspace=lambda: "workspace")
    assert state["engine"] == "engine" and all(state[key] is None for key in session.SHARED_KEYS)

    session.remember(state, session.ADVICE, "fingerprint-a", "advice for a")
    assert session.recalled_value(state, session.ADVICE, "fingerprint-a") == "advice for a"
    assert session.recall(state, session.ADVICE, "fingerprint-b") is None
    session.set_up(state, engine=lambda: "another", workspace=lambda: "another")
    assert state["engine"] == "engine" and state[session.ADVICE].value == "advice for a"  # set up once per session


def test_new_data_clears_what_described_the_old_and_new_labels_only_what_depended_on_them() -> None:
    state = {}
    session.set_up(state, engine=object, workspace=object)
    state.update(similarity="high", recommendation="scenario 1", chosen_strategy="fine_tune", train_config="config")
    session.remember(state, session.LABEL_REPORT, "/data/photos", "report", labels="before")

    session.relabelled(state, "relabelled dataset")
    assert state["dataset"] == "relabelled dataset" and state["train_config"] is None and state["similarity"] is None
    assert session.recall(state, session.LABEL_REPORT, "/data/photos").labels == "before"  # the page says it predates the decisions

    session.use_dataset(state, "/data/other", "other dataset")
    assert (state["data_dir"], state["dataset"], state[session.LABEL_REPORT]) == ("/data/other", "other dataset", None)
