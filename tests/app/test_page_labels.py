"""The Labels page, run through the router with the fake engine (the real judgement on pixel features)."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from tl_core.data.decisions import DECISIONS_FILE, EXCLUDE, RELABEL, UNDECIDED, Choice, load_decisions
from tl_core.data.scan import scan_dataset

from conftest import REPO, make_class_folders
from fake_engine import FakeEngine

APP = str(REPO / "app.py")
FLIPS = {"red/red_003.png": "green", "green/green_007.png": "blue"}


def flipped_folder(root: Path) -> Path:
    make_class_folders(root, {"red": 16, "green": 16, "blue": 16})
    for relative, wrong in FLIPS.items():
        (root / relative).rename(root / wrong / Path(relative).name)
    return root


def open_labels(root: Path | None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["engine"] = FakeEngine()
    at.session_state["dataset"] = scan_dataset(root) if root else None
    at.session_state["data_dir"] = str(root) if root else None
    at.run()
    at.switch_page("pages/labels.py").run()
    return at


def suspect_boxes(at: AppTest) -> dict:
    return {box.key.split("_", 2)[2]: box for box in at.selectbox if box.key and box.key.startswith("suspect_")}


def test_without_data_the_page_sends_you_to_the_data_page() -> None:
    at = open_labels(None)
    assert not at.exception
    assert "Load a dataset on the Data page first" in at.info[0].value


def test_suspects_are_shown_and_a_relabel_is_saved_and_applied(tmp_path: Path) -> None:
    root = flipped_folder(tmp_path / "data")
    at = open_labels(root)
    at.button(key="find_label_issues").click().run()
    assert not at.exception
    metrics = {metric.label: metric.value for metric in at.metric}
    suspects = at.session_state["label_report"].value.suspects
    assert metrics["Images judged"] == "48" and metrics["Suspects"] == str(len(suspects))
    assert metrics["Flagged"] == str(sum(suspect.flagged for suspect in suspects))
    boxes = suspect_boxes(at)
    assert {"green/red_003.png", "blue/green_007.png"} <= set(boxes)
    box = boxes["green/red_003.png"]
    assert box.value == UNDECIDED
    assert box.options[2] == "Relabel to 'red'"  # the suggested class comes first among the relabels
    box.set_value(Choice(RELABEL, "red"))
    suspect_boxes(at)["blue/green_007.png"].set_value(Choice(EXCLUDE))
    next(button for button in at.button if button.label == "Save the decisions on this page").click().run()
    assert not at.exception
    decisions = load_decisions(root)
    assert decisions["green/red_003.png"].to == "red" and decisions["blue/green_007.png"].action == EXCLUDE
    assert (root / DECISIONS_FILE).is_file() and (root / "green" / "red_003.png").is_file()  # the image stays where it was
    dataset = at.session_state["dataset"]
    assert next(record for record in dataset.records if record.relative_path == "green/red_003.png").class_name == "red"
    assert not any(record.relative_path == "blue/green_007.png" for record in dataset.records)
    assert any("Saved 2 decisions" in message.value for message in at.success)
    assert "1** relabelled, **1** excluded" in "\n".join(markdown.value for markdown in at.markdown)
    assert "Judged before your latest decisions" in "\n".join(info.value for info in at.info)
    # The boxes now show what is saved.
    assert suspect_boxes(at)["green/red_003.png"].value == Choice(RELABEL, "red")
    # Looking again judges the labels as they are now, and the note about an old judgement goes.
    at.button(key="find_label_issues").click().run()
    assert "Judged before your latest decisions" not in "\n".join(info.value for info in at.info)
    assert "blue/green_007.png" not in suspect_boxes(at)  # excluded: not judged


def test_bulk_relabel_and_undo(tmp_path: Path) -> None:
    root = flipped_folder(tmp_path / "data")
    at = open_labels(root)
    at.button(key="find_label_issues").click().run()
    suspects = at.session_state["label_report"].value.suspects
    at.slider(key="bulk_floor").set_value(0.5)
    at.radio(key="bulk_action").set_value("relabel").run()
    confident = [suspect for suspect in suspects if suspect.confidence >= 0.5]
    at.button(key="bulk_apply").click().run()
    assert not at.exception
    decisions = load_decisions(root)
    assert len(decisions) == len(confident) >= 2
    assert all(decisions[suspect.relative_path].to == suspect.suggested_label for suspect in confident)
    at.multiselect(key="forget_decisions").set_value(sorted(decisions)).run()
    at.button(key="forget_apply").click().run()
    assert not at.exception
    assert load_decisions(root) == {} and not (root / DECISIONS_FILE).exists()
    assert "None yet" in "\n".join(caption.value for caption in at.caption)


def test_the_data_page_says_decisions_are_applied(tmp_path: Path) -> None:
    root = flipped_folder(tmp_path / "data")
    at = open_labels(root)
    at.button(key="find_label_issues").click().run()
    suspect_boxes(at)["blue/green_007.png"].set_value(Choice(EXCLUDE))
    next(button for button in at.button if button.label == "Save the decisions on this page").click().run()
    at.switch_page("pages/data.py").run()
    assert not at.exception
    assert any("label decisions are applied: 0 relabelled, 1 excluded" in info.value for info in at.info)
    assert any(link.proto.page == "labels" for link in at.get("page_link"))


def test_a_read_only_dataset_folder_is_explained_not_a_crash(tmp_path: Path, monkeypatch) -> None:
    import tempfile

    root = flipped_folder(tmp_path / "data")
    at = open_labels(root)
    at.button(key="find_label_issues").click().run()
    suspect_boxes(at)["blue/green_007.png"].set_value(Choice(EXCLUDE))

    def read_only(*arguments, **keywords):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", read_only)
    next(button for button in at.button if button.label == "Save the decisions on this page").click().run()
    assert not at.exception
    assert any("Could not save the label decisions" in error.value for error in at.error)
    assert load_decisions(root) == {}


def test_a_pair_of_copies_in_two_classes_is_decided_in_its_own_form(tmp_path: Path) -> None:
    import shutil

    root = flipped_folder(tmp_path / "data")
    shutil.copy(root / "red" / "red_001.png", root / "blue" / "copy.png")
    at = open_labels(root)
    at.button(key="find_label_issues").click().run()
    boxes = {box.key.split("_", 2)[2]: box for box in at.selectbox if box.key and box.key.startswith("pair0_")}
    assert set(boxes) == {"red/red_001.png", "blue/copy.png"}
    boxes["blue/copy.png"].set_value(Choice(EXCLUDE))
    next(button for button in at.button if button.label == "Save these two decisions").click().run()
    assert not at.exception
    assert {path: decision.action for path, decision in load_decisions(root).items()} == {"blue/copy.png": EXCLUDE}


def test_a_retry_clears_the_old_error_progress_moves_and_the_list_is_sorted_by_what_it_shows(tmp_path: Path) -> None:
    """The first try fails (weights missing), the second succeeds: no error is left on the page. The progress callback
    moves through every phase from 0, and the suspects run from the least likely label up, the number each card shows first."""
    import re

    from tl_core.errors import WeightsError

    root = flipped_folder(tmp_path / "data")
    steps = []

    class FailsOnce(FakeEngine):
        tries = 0

        def find_label_issues(self, dataset, backbone="mobilenet_v2", on_progress=None):
            FailsOnce.tries += 1
            if FailsOnce.tries == 1:
                raise WeightsError("The ImageNet weights for MobileNetV2 are missing.")
            return super().find_label_issues(dataset, backbone, on_progress=lambda phase, done, total: (steps.append((phase, done, total)), on_progress(phase, done, total)))

    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["engine"] = FailsOnce()
    at.session_state["dataset"] = scan_dataset(root)
    at.session_state["data_dir"] = str(root)
    at.run()
    at.switch_page("pages/labels.py").run()
    at.button(key="find_label_issues").click().run()
    assert [error.value for error in at.error] == ["The ImageNet weights for MobileNetV2 are missing."]
    at.button(key="find_label_issues").click().run()
    assert not at.exception and not at.error
    judged = [(done, total) for phase, done, total in steps if phase == "judge"]
    assert judged[0][0] == 0 and [done for done, _ in judged] == list(range(judged[0][1] + 1))

    headlines = [markdown.value for markdown in at.markdown if markdown.value.startswith("labelled **") and "looks like" in markdown.value]
    given = [int(re.match(r"labelled \*\*\w+\*\* \((\d+)%\)", headline).group(1)) for headline in headlines]
    assert headlines and given == sorted(given)
    assert "sorted by the first percentage" in " ".join(caption.value for caption in at.caption)
