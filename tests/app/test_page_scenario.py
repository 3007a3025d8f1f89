"""The Scenario page, run through the router with the fake engine."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tl_core.advice.scenario import recommend
from tl_core.data.records import Dataset, ImageRecord
from tl_core.data.scan import scan_dataset
from tl_core.models.blocks import freeze_wording

from conftest import REPO, make_class_folders
from fake_engine import FakeEngine, canned_advice

APP = str(REPO / "app.py")


@pytest.fixture
def small_folder(tmp_path: Path) -> Path:
    """Four classes, 40 training images: about 10 per class, far below the threshold."""
    return make_class_folders(tmp_path / "small", {"ants": 14, "bees": 14, "flies": 14, "wasps": 14})


def large_dataset(root: Path) -> Dataset:
    """A dataset of 2 x 1,200 training images that exist only as records (the page never opens them)."""
    records = [
        ImageRecord(str(root / name / f"{index}.png"), f"{name}/{index}.png", name, label, "train", 64, 64, "PNG", "RGB", 100, 0)
        for label, name in enumerate(("cats", "dogs"))
        for index in range(1200)
    ]
    return Dataset(root, ["cats", "dogs"], records, [], "generated for the test", {"train": 1.0}, 0)


def open_scenario(dataset: Dataset | None, data_dir: str | None = None, engine: FakeEngine | None = None, **preset) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["engine"] = engine or FakeEngine()
    at.session_state["dataset"] = dataset
    at.session_state["data_dir"] = data_dir
    for key, value in preset.items():
        at.session_state[key] = value
    at.run()
    at.switch_page("pages/scenario.py").run()
    return at


def all_text(at: AppTest) -> str:
    parts = [element.value for kind in ("markdown", "caption", "info", "success", "warning", "error", "subheader", "title") for element in at.get(kind)]
    return "\n".join(str(part) for part in parts)


def links_to(at: AppTest, page: str) -> bool:
    """Whether the page shows an ``st.page_link`` to ``pages/<page>.py`` (AppTest reports the page's URL name)."""
    return any(link.proto.page.removesuffix(".py").endswith(page) for link in at.get("page_link"))


def figure_of(at: AppTest) -> dict:
    charts = at.get("plotly_chart")
    assert len(charts) == 1
    return json.loads(charts[0].proto.spec)


def figure_text(figure: dict) -> str:
    return " ".join(annotation.get("text", "") for annotation in figure["layout"].get("annotations", []))


def use_button(at: AppTest):
    return next(button for button in at.button if button.label.startswith("Use ") and button.label.endswith("on the Setup page"))


def test_empty_state_points_to_the_data_page() -> None:
    at = open_scenario(None)

    assert not at.exception
    assert at.title[0].value == "2 · Where your data sits"
    assert "No dataset loaded yet" in at.info[0].value
    assert links_to(at, "data")
    assert not at.get("plotly_chart")
    assert not at.radio


def test_size_is_measured_before_similarity_is_answered(small_folder: Path) -> None:
    at = open_scenario(scan_dataset(small_folder), str(small_folder))

    assert not at.exception
    text = all_text(at)
    assert "your data is **small**" in text
    assert "10 per class on average" in text and "1,000" in text
    assert at.radio(key="scenario_similarity").value is None
    assert "Answer the similarity question" in text
    assert at.session_state["recommendation"] is None
    # The matrix is drawn with the row known and the column still open.
    figure = figure_of(at)
    assert "which column?" in figure_text(figure)
    assert [button.key for button in at.button] == ["scenario_measure"]  # nothing to adopt before the question is answered


def test_preset_low_similarity_explains_scenario_two(small_folder: Path) -> None:
    at = open_scenario(scan_dataset(small_folder), str(small_folder), similarity="low")

    assert not at.exception
    assert at.radio(key="scenario_similarity").value == "low"
    recommendation = at.session_state["recommendation"]
    assert recommendation.scenario == 2 and recommendation.strategy == "fine_tune"
    assert "Scenario 2 · Small data, unlike ImageNet" in at.subheader[-1].value
    text = all_text(at)
    # The reasons come as a list, with the measured numbers.
    assert "- 40 training images in 4 classes: 10 per class on average" in text
    assert "- The smallest class has only" in text
    # Both views, and what settles them.
    assert "Freeze the early layers, retrain the rest." in text
    assert "Transfer may barely help." in text
    assert "Compare them side by side" in text
    assert at.multiselect(key="compare_strategies").value == ["feature_extraction", "fine_tune", "from_scratch"]
    assert links_to(at, "setup")


def test_matrix_has_four_cells_and_marks_the_data(small_folder: Path) -> None:
    at = open_scenario(scan_dataset(small_folder), str(small_folder), similarity="low")

    assert not at.exception
    figure = figure_of(at)
    text = figure_text(figure)
    for number in range(1, 5):
        assert f"Scenario {number}" in text
    assert "your data" in text and "10 images/class" in text and "small below 1,000" in text
    rectangles = [shape for shape in figure["layout"]["shapes"] if shape["type"] == "rect"]
    assert len(rectangles) == 4
    highlighted = [shape for shape in rectangles if shape["line"]["width"] == 4]
    # Exactly one cell stands out: small (bottom row) and unlike ImageNet (left column).
    assert len(highlighted) == 1 and highlighted[0]["x0"] < 1 and highlighted[0]["y0"] < 1


def test_answering_high_moves_the_data_to_scenario_one(small_folder: Path) -> None:
    at = open_scenario(scan_dataset(small_folder), str(small_folder))

    at.radio(key="scenario_similarity").set_value("high").run()

    assert not at.exception
    assert at.session_state["similarity"] == "high"
    assert at.session_state["recommendation"].scenario == 1
    assert "use feature extraction" in at.subheader[-1].value
    assert "Transfer may barely help." not in all_text(at)
    assert use_button(at).label == "Use feature extraction on the Setup page"


def test_button_stores_the_strategy_for_the_setup_page(small_folder: Path) -> None:
    at = open_scenario(scan_dataset(small_folder), str(small_folder), similarity="low")

    use_button(at).click().run()

    assert not at.exception
    assert at.session_state["chosen_strategy"] == "fine_tune"
    assert "The Setup page will start from fine-tuning" in at.success[0].value
    at.switch_page("pages/setup.py").run()
    assert not at.exception
    assert at.radio(key="setup_strategy").value == "fine_tune"


def test_earlier_choice_that_differs_is_pointed_out(small_folder: Path) -> None:
    at = open_scenario(scan_dataset(small_folder), str(small_folder), similarity="high", chosen_strategy="from_scratch")

    assert not at.exception
    assert "set to training from scratch from an earlier choice" in at.warning[0].value
    use_button(at).click().run()
    assert at.session_state["chosen_strategy"] == "feature_extraction"
    assert not at.warning


def test_large_similar_data_lands_in_scenario_four(tmp_path: Path) -> None:
    at = open_scenario(large_dataset(tmp_path), str(tmp_path), similarity="high")

    assert not at.exception
    recommendation = at.session_state["recommendation"]
    assert (recommendation.scenario, recommendation.strategy) == (4, "full_fine_tune")
    assert "your data is **large**" in all_text(at)
    assert "1,200 images/class" in figure_text(figure_of(at))


def test_a_measured_similarity_shows_its_score(small_folder: Path) -> None:
    class MeasuringEngine(FakeEngine):
        def recommend(self, dataset, similarity):
            return recommend(dataset, "low", similarity_source="measured", similarity_score=0.23)

    at = open_scenario(scan_dataset(small_folder), str(small_folder), engine=MeasuringEngine(), similarity="high")

    assert not at.exception
    assert "measured similarity 0.23" in all_text(at)
    assert "similarity 0.23" in figure_text(figure_of(at))
    assert at.session_state["recommendation"].scenario == 2


def test_alternatives_describe_the_other_cells(small_folder: Path) -> None:
    at = open_scenario(scan_dataset(small_folder), str(small_folder), similarity="high")

    assert not at.exception
    expander_text = " ".join(element.value for element in at.expander[0].markdown)
    for number in (2, 3, 4):
        assert f"Scenario {number} ·" in expander_text
    assert "Scenario 1 ·" not in expander_text


def test_a_stale_recommendation_is_replaced(small_folder: Path) -> None:
    dataset = scan_dataset(small_folder)
    at = open_scenario(dataset, str(small_folder), similarity="low", recommendation=replace(recommend(dataset, "high"), reasons=["stale"]))

    assert not at.exception
    assert at.session_state["recommendation"].reasons != ["stale"]
    assert at.session_state["recommendation"].scenario == 2


def test_measured_similarity_replaces_the_question_and_shows_its_components(small_folder: Path) -> None:
    at = open_scenario(scan_dataset(small_folder), str(small_folder))
    at.button(key="scenario_measure").click().run()

    assert not at.exception
    text = all_text(at)
    assert "**Measured similarity: 0.12** (low; 0.5 and above counts as high)" in text
    metrics = {metric.label: metric.value for metric in at.metric}
    assert metrics["Probe gain"] == "0.00" and metrics["Domain shift"] == "0.13" and metrics["Confidence"] == "0.16"
    assert at.session_state["recommendation"].similarity_source == "measured"
    assert "Scenario 2" in text and "measured similarity 0.12" in text
    wording = freeze_wording(FakeEngine().layer_map("mobilenet_v2").blocks, 12)
    assert f"Suggested for fine-tuning: {wording}," in text
    # The candidates side by side: expected accuracy against minutes here; the measurement overrules the matrix,
    # and the heading, the blue box and the matrix's own cell all say so.
    advice = at.session_state["advice"].value
    assert advice.overrides_matrix and advice.override_text() in text
    heading = at.subheader[-1].value if "Scenario 2" in at.subheader[-1].value else next(header.value for header in at.subheader if "Scenario 2" in header.value)
    assert heading.endswith(": measured, use feature extraction (the matrix alone says fine-tuning with the first layers frozen)")
    cells = " ".join(annotation["text"] for annotation in json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["annotations"])
    assert "matrix: freeze early layers,<br>retrain the rest</i><br><b>measured: → feature extraction" in cells
    candidates = at.dataframe[0].value
    assert "image size" not in candidates.columns  # images as large as the network's input: one size, no column
    assert list(candidates["strategy"]) == ["Feature extraction  ★ recommended", "Fine-tuning with the first layers frozen", "Training from scratch"]
    assert list(candidates["minutes here"]) == [0.5, 4.0, 15.0] and list(candidates["fits the budget"]) == ["yes", "yes", "no"]
    assert list(candidates["expected accuracy"])[:2] == pytest.approx([97.2, 97.5]) and pd.isna(list(candidates["expected accuracy"])[2])
    assert "- **Training from scratch**: not predictable from the probe; compare the strategies to measure it" in text
    assert at.session_state["recommendation"].strategy == "feature_extraction"
    assert len(at.get("plotly_chart")) == 2  # the matrix and the shift profile
    at.button(key="scenario_forget_measurement").click().run()
    assert at.radio(key="scenario_similarity") is not None and not at.exception


def test_comparison_table_and_adopting_the_winner(small_folder: Path) -> None:
    at = open_scenario(scan_dataset(small_folder), str(small_folder), similarity="low")
    at.button(key="compare_run").click().run()

    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["strategy"]) == ["Feature extraction", "Fine-tuning with the first layers frozen", "Training from scratch"]
    assert list(table["validation accuracy"]) == [0.81, 0.86, 0.40]
    assert at.session_state["engine"].compared_with_centre_crop is False  # the canned advice keeps whole images
    adopt = at.button(key="compare_adopt")
    assert adopt.label == "Adopt the winner: fine-tuning with the first layers frozen"
    adopt.click().run()
    assert at.session_state["chosen_strategy"] == "fine_tune" and not at.exception


def test_the_joined_networks_appear_as_a_candidate_and_the_button_adopts_them(small_folder: Path) -> None:
    from dataclasses import replace

    from tl_core.advice.candidates import Candidate

    joined = "mobilenet_v2+mobilenet_0.75"

    class JoinedEngine(FakeEngine):
        def advise(self, dataset, backbone="mobilenet_v2", time_budget_minutes=10.0):
            advice = canned_advice(dataset, "low")
            rows = [replace(row, recommended=False) for row in advice.candidates]
            rows.append(Candidate("feature_extraction", 0.985, "measured: a probe of the joined networks' features", 50.0, 100, True, recommended=True, backbone=joined))
            return replace(advice, candidates=rows, chosen_backbone=joined)

    at = open_scenario(scan_dataset(small_folder), str(small_folder), engine=JoinedEngine())
    at.button(key="scenario_measure").click().run()

    assert not at.exception
    candidates = at.dataframe[0].value
    assert list(candidates["network"]) == ["MobileNetV2"] * 3 + ["MobileNetV2 + MobileNet (0.75 width), joined"]
    assert list(candidates["strategy"])[-1] == "Feature extraction  ★ recommended"
    assert "**Feature extraction with MobileNetV2 + MobileNet (0.75 width), joined**: measured: a probe of the joined networks' features" in all_text(at)
    button = use_button(at)
    assert button.label == "Use feature extraction with MobileNetV2 + MobileNet (0.75 width), joined on the Setup page"
    button.click().run()
    assert (at.session_state["chosen_strategy"], at.session_state["chosen_backbone"]) == ("feature_extraction", joined)
    at.switch_page("pages/setup.py").run()
    assert not at.exception
    assert at.selectbox(key="setup_backbone").value == joined and at.session_state["train_config"].backbone == joined


def test_many_candidates_all_show_in_the_table_and_their_bases_fold_away(small_folder: Path) -> None:
    from dataclasses import replace

    from tl_core.advice.candidates import Candidate

    class SizedEngine(FakeEngine):
        def advise(self, dataset, backbone="mobilenet_v2", time_budget_minutes=10.0):
            advice = canned_advice(dataset, "low")
            rows = [replace(row, recommended=False) for row in advice.candidates]
            for size in (64, 128):
                rows += [
                    Candidate("feature_extraction", 0.90, f"measured: the probe at {size} px", 60.0, 200, True, image_size=size),
                    Candidate("fine_tune", 0.93, f"feature extraction's measured accuracy at {size} px with a share removed", 500.0, 4, True, recommended=size == 64, image_size=size),
                ]
            return replace(advice, candidates=rows, image_size=64, image_size_reason="Image size 64 px: your images are typically 64 px.")

    at = open_scenario(scan_dataset(small_folder), str(small_folder), engine=SizedEngine())
    at.button(key="scenario_measure").click().run()

    assert not at.exception
    assert len(at.dataframe[0].value) == 7
    bases = next(expander for expander in at.expander if expander.label == "Where each expected accuracy comes from")
    assert not bases.proto.expanded  # seven bases would push the reasons down; they fold away
    assert "**Fine-tuning at 128 px**: feature extraction's measured accuracy at 128 px" in " ".join(caption.value for caption in bases.caption)


def test_the_caption_on_the_estimates_names_the_turned_images_where_fine_tuning_learns_from_them(small_folder: Path) -> None:
    from dataclasses import replace

    class TurnsEngine(FakeEngine):
        def advise(self, dataset, backbone="mobilenet_v2", time_budget_minutes=10.0):
            return replace(canned_advice(dataset, "low"), turns=True)

    caption = "a share that grows with how unlike ImageNet your images measured"
    plain = open_scenario(scan_dataset(small_folder), str(small_folder))
    plain.button(key="scenario_measure").click().run()
    assert caption + ". Compare the strategies" in all_text(plain)
    at = open_scenario(scan_dataset(small_folder), str(small_folder), engine=TurnsEngine())
    at.button(key="scenario_measure").click().run()
    assert not at.exception
    assert caption + " and with the turned images fine-tuning learns from. Compare the strategies" in all_text(at)
