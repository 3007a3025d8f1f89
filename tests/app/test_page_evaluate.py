"""The Evaluate page through the router, on canned run folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from tl_core.config import TrainConfig
from tl_core.events import TrainingFinished
from tl_core.insight.metrics import evaluate_predictions
from tl_core.service.jobs import TrainingJob

from conftest import REPO, make_class_folders
from fake_engine import FakeEngine, write_canned_run

APP = str(REPO / "app.py")


def open_evaluate_page(run_dir: Path | None = None, job: TrainingJob | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["engine"] = FakeEngine()
    if run_dir is not None:
        at.session_state["run_dir"] = str(run_dir)
    if job is not None:
        at.session_state["job"] = job
    at.run()
    at.switch_page("pages/evaluate.py").run()
    return at


def texts(at: AppTest, kind: str) -> str:
    return "\n".join(str(element.value) for element in at.get(kind))


def chart(at: AppTest, key: str) -> dict:
    """The plotly figure of the chart with this key, as a dict."""
    for element in at.get("plotly_chart"):
        if key in element.proto.id:
            return json.loads(element.proto.spec)
    raise AssertionError(f"no chart with key {key!r}")


def test_without_a_run_the_page_points_to_train():
    at = open_evaluate_page()

    assert not at.exception
    assert at.title[0].value == "5 · Evaluate"
    assert "No trained model yet" in at.info[0].value
    assert [link.proto.page for link in at.get("page_link")] == ["train"]


def test_a_two_class_run_shows_metrics_matrix_table_roc_curves_and_mistakes(tmp_path):
    at = open_evaluate_page(write_canned_run(tmp_path / "run", ["ants", "bees"]))

    assert not at.exception
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["Accuracy"] == "75.0%"
    assert metrics["Macro F1"] == "0.750"
    assert metrics["ROC AUC"] == "0.750"
    assert metrics["Mistakes"] == "2"
    assert "test split · 8 images" in texts(at, "caption")  # the canned metrics.json says evaluated_split "test"
    assert "that did not choose its epoch either (the val split did)" in texts(at, "caption")

    heatmap = chart(at, "evaluate_confusion")["data"][0]
    assert heatmap["type"] == "heatmap"
    assert heatmap["z"] == [[3, 1], [1, 3]]
    assert heatmap["text"] == [["3", "1"], ["1", "3"]]
    layout = chart(at, "evaluate_confusion")["layout"]
    assert layout["yaxis"]["title"]["text"] == "true class"
    assert layout["xaxis"]["title"]["text"] == "predicted class"

    table = at.dataframe[0].value
    assert list(table["class"]) == ["ants", "bees"]
    assert list(table["images"]) == [4, 4]
    assert table["precision"].tolist() == [0.75, 0.75]

    assert "ROC curve" in texts(at, "subheader")
    roc = chart(at, "evaluate_roc")
    assert roc["data"][1]["x"][-1] == 1.0 and roc["data"][0]["x"] == [0, 1]
    assert roc["layout"]["title"]["text"] == "Positive class: bees"

    assert "Learning curves" in texts(at, "subheader")
    assert "validation loss rising: overfitting from here" in json.dumps(chart(at, "evaluate_loss_chart"))

    assert "Misclassified images" in texts(at, "subheader")
    assert "**ants → bees** · 1 image" in texts(at, "markdown")
    assert "true: ants · predicted: bees (90%)" in texts(at, "caption")
    assert any(link.proto.page == "export" for link in at.get("page_link"))


def test_the_normalised_toggle_shows_shares_of_each_true_class(tmp_path):
    at = open_evaluate_page(write_canned_run(tmp_path / "run", ["ants", "bees"]))
    at.toggle(key="evaluate_normalised").set_value(True).run()

    assert not at.exception
    heatmap = chart(at, "evaluate_confusion")["data"][0]
    assert heatmap["z"] == [[0.75, 0.25], [0.25, 0.75]]
    assert heatmap["text"] == [["75%", "25%"], ["25%", "75%"]]
    assert heatmap["colorbar"]["title"]["text"] == "share"


def test_three_classes_have_no_roc(tmp_path):
    at = open_evaluate_page(write_canned_run(tmp_path / "run", ["ants", "bees", "wasps"]))

    assert not at.exception
    assert "ROC AUC" not in [metric.label for metric in at.metric]
    assert "ROC curve" not in texts(at, "subheader")
    assert len(chart(at, "evaluate_confusion")["data"][0]["z"]) == 3


def test_many_classes_get_the_page_width_every_label_and_every_row_in_view(tmp_path):
    names = [f"class_{index:02d}" for index in range(12)]
    at = open_evaluate_page(write_canned_run(tmp_path / "run", names))

    assert not at.exception
    layout = chart(at, "evaluate_confusion")["layout"]
    assert layout["xaxis"]["dtick"] == 1 and layout["yaxis"]["dtick"] == 1  # no label skipped when they crowd
    assert not matrix_in_a_column(at)  # the page's width, the per-class table below it
    assert len(at.dataframe[0].value) == 12
    assert matrix_in_a_column(open_evaluate_page(write_canned_run(tmp_path / "few", ["ants", "bees", "wasps"])))  # beside the table


def matrix_in_a_column(at: AppTest) -> bool:
    return any("evaluate_confusion" in element.proto.id for column in at.columns for element in column.get("plotly_chart"))


def test_the_gallery_shows_readable_images_as_thumbnails(tmp_path):
    images = make_class_folders(tmp_path / "images", {"ants": 4, "bees": 4}, size=32)
    paths = [str(path) for pair in zip(sorted((images / "ants").iterdir()), sorted((images / "bees").iterdir()), strict=True) for path in pair]
    at = open_evaluate_page(write_canned_run(tmp_path / "run", ["ants", "bees"], paths))

    assert not at.exception
    captions = [image.caption for element in at.get("image") for image in element.proto.imgs]
    assert captions == ["true: ants · predicted: bees (90%)", "true: bees · predicted: ants (90%)"]
    assert "image not readable" not in texts(at, "caption")


def with_predictions(run_dir, labels, probabilities):
    """The canned run's metrics replaced by an evaluation of these predictions (images that do not exist)."""
    evaluation = evaluate_predictions(labels, probabilities, ["ants", "bees"], [f"/nowhere/{index}.png" for index in range(len(labels))])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.update(evaluation.to_dict())
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def test_the_gallery_is_capped_and_says_how_many_more(tmp_path):
    run_dir = write_canned_run(tmp_path / "run", ["ants", "bees"])
    labels = np.arange(60) % 2
    probabilities = np.tile([0.2, 0.8], (60, 1))  # everything predicted as bees: 30 ants are wrong
    at = open_evaluate_page(with_predictions(run_dir, labels, probabilities))

    assert not at.exception
    assert "Showing 24 of 30 misclassified images" in texts(at, "caption")
    assert "ants → bees** · 30 images (showing 24 of 30)" in texts(at, "markdown")
    assert "6 more misclassified images not shown: the gallery stops at 24." in texts(at, "caption")
    assert texts(at, "caption").count("true: ants · predicted: bees (80%)") == 24


def test_a_group_cut_short_by_the_gallery_says_how_many_it_shows(tmp_path):
    """23 ants taken for bees fill the gallery but one place; of the 2 bees taken for ants only 1 fits: '2 images (showing 1 of 2)'."""
    run_dir = write_canned_run(tmp_path / "run", ["ants", "bees"])
    labels = np.array([0] * 30 + [1] * 30)
    probabilities = np.tile([0.8, 0.2], (60, 1))
    probabilities[:23] = [0.2, 0.8]  # 23 ants predicted as bees
    probabilities[30:32] = [0.7, 0.3]  # 2 bees predicted as ants
    probabilities[32:] = [0.1, 0.9]
    at = open_evaluate_page(with_predictions(run_dir, labels, probabilities))

    assert not at.exception
    assert "**ants → bees** · 23 images" in texts(at, "markdown") and "23 images (showing" not in texts(at, "markdown")
    assert "**bees → ants** · 2 images (showing 1 of 2)" in texts(at, "markdown")
    assert "Showing 24 of 25 misclassified images" in texts(at, "caption")


def test_a_run_that_finished_on_another_page_is_picked_up(tmp_path):
    run_dir = write_canned_run(tmp_path / "run", ["ants", "bees"])
    job = TrainingJob(TrainConfig(data_dir=str(tmp_path), out_dir=str(run_dir)))
    job.handle(TrainingFinished(status="finished", run_dir=str(run_dir), test_accuracy=0.75, seconds=1.0))
    at = open_evaluate_page(job=job)

    assert not at.exception
    assert at.session_state["run_dir"] == str(run_dir)
    assert {metric.label: metric.value for metric in at.metric}["Accuracy"] == "75.0%"


def test_an_incomplete_run_folder_is_an_error_not_a_crash(tmp_path):
    (tmp_path / "empty").mkdir()
    at = open_evaluate_page(tmp_path / "empty")

    assert not at.exception
    assert "has no readable metrics.json and run.json" in at.error[0].value
    assert "Train the model again" in at.error[0].value


def test_a_run_chosen_and_reported_on_the_same_split_says_its_figures_are_optimistic(tmp_path):
    run_dir = write_canned_run(tmp_path / "run", ["ants", "bees"])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    (run_dir / "metrics.json").write_text(json.dumps({**metrics, "evaluated_split": "val", "selection_split": "val"}))
    at = open_evaluate_page(run_dir)

    assert not at.exception
    assert "the same images chose the best epoch" in texts(at, "caption") and "slightly optimistic" in texts(at, "caption")


def test_the_caption_names_the_views_each_prediction_averages(tmp_path):
    captions = {}
    for name, turns in (("mirror", False), ("turns", True)):
        run_dir = write_canned_run(tmp_path / name, ["ants", "bees"])
        summary = json.loads((run_dir / "run.json").read_text())
        summary.update(test_time_flip=True, config={"augmentation": {"flip": "horizontal", "turns": turns}})
        (run_dir / "run.json").write_text(json.dumps(summary))
        at = open_evaluate_page(run_dir)
        assert not at.exception
        captions[name] = texts(at, "caption")
    assert "Each prediction averages the image and its mirror image (test-time flip)." in captions["mirror"]
    assert "Each prediction averages the image's eight turned and mirrored views." in captions["turns"] and "its mirror image" not in captions["turns"]
    assert "Each prediction averages" not in texts(open_evaluate_page(write_canned_run(tmp_path / "none", ["ants", "bees"])), "caption")


def test_attention_maps_of_the_mistakes_for_the_true_and_the_predicted_class(tmp_path):
    run_dir = write_canned_run(tmp_path / "run", ["ants", "bees"])
    at = open_evaluate_page(run_dir)
    images_before = len(at.get("image"))

    at.toggle(key="evaluate_maps").set_value(True).run()

    assert not at.exception
    explained = at.session_state["engine"].explained
    assert [name for _, name in explained] == ["ants", "bees", "bees", "ants"]  # two mistakes (ants->bees, bees->ants): true class, then predicted
    assert len(at.get("image")) == images_before + 4
    assert "Red marks what speaks for the class" in "\n".join(str(caption.value) for caption in at.caption)
