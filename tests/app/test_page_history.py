"""The History page through the router, with a fake engine and real run folders written by the test."""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from tl_core.service.workspace import Workspace

from conftest import REPO
from fake_engine import FakeEngine, finished_run

APP = str(REPO / "app.py")


def open_history_page(tmp_path: Path, runs: Path, job=None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["engine"] = FakeEngine()
    at.session_state["workspace"] = Workspace.create(tmp_path / "sessions", runs_root=runs)
    if job is not None:
        at.session_state["job"] = job
    at.run()
    at.switch_page("pages/history.py").run()
    return at


def texts(at: AppTest, kind: str) -> str:
    return "\n".join(str(element.value) for element in at.get(kind))


def test_without_runs_the_page_says_so(tmp_path: Path) -> None:
    at = open_history_page(tmp_path, tmp_path / "runs")

    assert not at.exception
    assert at.title[0].value == "History"
    assert "No runs yet" in at.info[0].value


def test_runs_are_listed_and_one_can_be_opened(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    older = finished_run(runs, "older", "2026-12-01T10:00:00+00:00")
    finished_run(runs, "newer", "2026-12-03T10:00:00+00:00", strategy="fine_tune")
    (runs / "broken").mkdir()
    (runs / "broken" / "run.json").write_text("{")
    at = open_history_page(tmp_path, runs)

    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["folder"]) == ["broken", "newer", "older"]  # newest first (the damaged folder's time is now)
    assert list(table["status"]) == ["unreadable", "finished", "finished"]
    assert list(table.columns[:10]) == ["created", "dataset", "strategy", "test accuracy", "minutes", "estimated minutes", "status", "epochs", "phases", "kept epoch"]
    assert list(table["test accuracy"])[1:] == [75.0, 75.0] and list(table["strategy"])[1:] == ["fine tune", "feature extraction"]

    # The damaged run says why and cannot be opened; a finished one can.
    assert "run.json cannot be read" in at.warning[0].value
    assert at.button(key="history_open").disabled
    at.selectbox(key="history_run").set_value(str(older)).run()
    at.button(key="history_open").click().run()

    assert not at.exception
    assert at.session_state["run_dir"] == str(older)
    assert at.button(key="history_open").label == "Shown on Evaluate and Export"
    assert any(link.proto.page == "evaluate" for link in at.get("page_link"))


def test_two_runs_side_by_side_with_their_differences_first(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first = finished_run(runs, "first", "2026-12-01T10:00:00+00:00", epochs=100)
    second = finished_run(runs, "second", "2026-12-03T10:00:00+00:00", strategy="fine_tune", epochs=8, augmentation={"zoom": 0.1})
    at = open_history_page(tmp_path, runs)

    at.multiselect(key="history_compare").set_value([str(first), str(second)]).run()

    assert not at.exception
    assert "**Settings**: 3 of 5 differ (augmentation.zoom, epochs, strategy); they are listed first." in texts(at, "markdown")
    settings = at.dataframe[2].value
    assert list(settings["setting"])[:3] == ["augmentation.zoom", "epochs", "strategy"]
    assert list(settings["A"])[:3] == ["0.2", "100", "feature_extraction"] and list(settings["B"])[:3] == ["0.1", "8", "fine_tune"]
    assert list(settings["differs"]) == ["●", "●", "●", "", ""]  # then data_dir and seed, the same in both
    charts = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    assert [chart["layout"]["title"]["text"] for chart in charts] == ["Validation loss (lower is better)", "Validation accuracy (higher is better)"]
    assert [trace["name"] for trace in charts[1]["data"]] == ["A · first", "B · second"]


def test_a_run_is_deleted_after_confirmation(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    doomed = finished_run(runs, "doomed", "2026-12-03T10:00:00+00:00")
    kept = finished_run(runs, "kept", "2026-12-01T10:00:00+00:00")
    at = open_history_page(tmp_path, runs)
    at.session_state["run_dir"] = str(doomed)
    at.run()

    assert doomed.is_dir()  # nothing happens before the confirmation
    at.button(key="history_delete").click().run()

    assert not at.exception
    assert not doomed.exists() and kept.is_dir()
    assert at.session_state["run_dir"] is None
    assert list(at.dataframe[0].value["folder"]) == ["kept"]


def test_train_again_starts_a_run_from_the_chosen_one_on_the_loaded_data(tmp_path: Path) -> None:
    from tl_core.data.scan import scan_dataset

    from conftest import make_class_folders

    runs = tmp_path / "runs"
    earlier = finished_run(runs, "earlier", "2026-12-01T10:00:00+00:00", epochs=7, image_size=32, backbone="mobilenet_v2")
    at = open_history_page(tmp_path, runs)
    assert at.button(key="history_train_again").disabled  # no data loaded yet

    data = make_class_folders(tmp_path / "photos", {"ants": 6, "bees": 6}, size=32)
    at.session_state["data_dir"] = str(data)
    at.session_state["dataset"] = scan_dataset(data)
    at.run()
    assert "**Train again** runs this run's settings on the data loaded now (12 images in `photos`)" in texts(at, "caption")
    at.button(key="history_train_again").click().run()

    assert not at.exception
    (config,) = at.session_state["engine"].started_configs
    assert config.from_run == str(earlier) and config.data_dir == str(data) and config.epochs == 7 and config.image_size == 32
    assert Path(config.out_dir).parent == runs and at.session_state["train_config"] == config
    assert at.session_state["job"].wait(5).status == "finished"


def test_a_reopened_run_stays_shown_after_the_sessions_run_was_adopted(tmp_path: Path) -> None:
    from tl_core.config import TrainConfig
    from tl_core.events import TrainingFinished
    from tl_core.service.jobs import TrainingJob

    runs = tmp_path / "runs"
    older = finished_run(runs, "older", "2026-12-01T10:00:00+00:00")
    newer = finished_run(runs, "newer", "2026-12-03T10:00:00+00:00")

    def finished_at_once(config, on_event, stop):
        on_event(TrainingFinished(status="finished", run_dir=str(newer), test_accuracy=0.75, seconds=1.0))

    job = TrainingJob(TrainConfig(data_dir=str(tmp_path), out_dir=str(newer)), trainer=finished_at_once).start()
    job.wait(5)
    at = open_history_page(tmp_path, runs, job)
    assert at.session_state["run_dir"] == str(newer)  # the session's own run, adopted once

    at.selectbox(key="history_run").set_value(str(older)).run()
    at.button(key="history_open").click().run()
    at.run()
    at.switch_page("pages/train.py").run()
    at.switch_page("pages/history.py").run()

    assert not at.exception
    assert at.session_state["run_dir"] == str(older)  # neither the app nor the Train page switched it back


def test_a_cleaned_run_and_a_noisy_one_compare_on_the_same_held_out_images(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    noisy = finished_run(runs, "noisy", "2026-12-01T10:00:00+00:00")
    cleaned = finished_run(runs, "cleaned", "2026-12-02T10:00:00+00:00")
    held_out = [{"path": f"/photos/insects/val/ants/{index}.jpg", "class": "ants", "split": "test", "size": 1, "mtime": 1, "row": index} for index in range(8)]
    trained = [{"path": f"/photos/insects/train/ants/{index}.jpg", "class": "ants", "split": "train", "size": 1, "mtime": 1, "row": 8 + index} for index in range(4)]
    for run_dir, rows, decisions in ((noisy, trained, None), (cleaned, trained[1:], {"relabelled": [], "excluded": [trained[0]["path"]], "kept": [], "stale": []})):
        summary = json.loads((run_dir / "run.json").read_text())
        summary["data"].update({"evaluation_split": "test", "fingerprint": run_dir.name})
        summary["label_decisions"] = decisions
        (run_dir / "run.json").write_text(json.dumps(summary))
        (run_dir / "images.json").write_text(json.dumps(held_out + rows))
    at = open_history_page(tmp_path, runs)
    assert list(at.dataframe[0].value["label decisions"]) == ["1 excluded", ""]

    at.multiselect(key="history_compare").set_value([str(noisy), str(cleaned)]).run()

    assert not at.exception
    assert "both were judged on the same 8 held-out images, so their accuracies compare directly. Label decisions: A none; B 1 excluded." in texts(at, "caption")
    held_out[0]["class"] = "bees"  # a relabelled held-out image: not the same judgement any more
    (cleaned / "images.json").write_text(json.dumps(held_out + trained))
    at.run()
    assert "were not judged on the same images" in texts(at, "caption")


def test_on_a_shared_app_only_whoever_trained_a_run_deletes_it(tmp_path: Path) -> None:
    from tl_core.service.sharing import Access, visitor_key

    runs = tmp_path / "runs"
    theirs = finished_run(runs, "theirs", "2026-12-03T10:00:00+00:00")
    mine = finished_run(runs, "mine", "2026-12-01T10:00:00+00:00")
    for run_dir, who in ((theirs, "them"), (mine, "me")):
        summary = json.loads((run_dir / "run.json").read_text())
        (run_dir / "run.json").write_text(json.dumps({**summary, "created_by": visitor_key(who)}))
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["engine"] = FakeEngine(Access(sharing=True, visitor=visitor_key("me")))
    at.session_state["workspace"] = Workspace.create(tmp_path / "sessions", runs_root=runs)
    at.run()
    at.switch_page("pages/history.py").run()
    at.session_state["run_dir"] = str(theirs)
    at.run()
    at.button(key="history_delete").click().run()  # what a forged click would do: the engine refuses too
    assert not at.exception and theirs.is_dir()
    assert "On a shared app a run can be deleted only by whoever trained it" in at.error[0].value
    at.selectbox(key="history_run").set_value(str(mine)).run()
    at.button(key="history_delete").click().run()
    assert not at.exception and not mine.exists() and theirs.is_dir()
