"""The Data page: every way in, the summary, and clear errors."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from conftest import REPO, make_class_folders
from fake_engine import FakeEngine

APP = str(REPO / "app.py")


def _app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["engine"] = FakeEngine()
    return at.run()


def test_empty_state_offers_the_sample(tmp_path: Path) -> None:
    at = _app()
    assert not at.exception
    assert "No dataset loaded yet" in at.info[0].value
    assert at.radio(key="data_source").value == "sample"


def test_sample_dataset_loads_and_is_summarised() -> None:
    at = _app()
    at.button[0].click().run()
    assert not at.exception
    assert at.subheader[0].value == "240 images in 4 classes"
    assert [metric.value for metric in at.metric][:2] == ["4", "240"]
    assert at.session_state["dataset"].class_names == ["0", "1", "2", "3"]
    assert at.get("plotly_chart"), "the per-class bar chart is drawn"
    assert len(at.get("image")) == 4  # one sample row per class
    assert "Every file was used" in at.success[0].value


def test_local_folder_with_skipped_files_and_imbalance(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "photos", {"big": 12, "small": 3})
    (root / "big" / "notes.txt").write_text("not an image")
    at = _app()
    at.radio(key="data_source").set_value("path").run()
    at.text_input(key="data_path").set_value(str(root)).run()
    at.button(key="use_typed_path").click().run()
    assert not at.exception
    assert "imbalanced" in at.warning[0].value and "4.0×" in at.warning[0].value
    assert len(at.warning) == 1 and not at.info  # no duplicates, so no duplicate warnings
    expander = at.expander[0]
    assert expander.label == "1 file skipped, with the reason"
    assert "notes.txt" in expander.dataframe[0].value["path"][0]
    assert [expander.label for expander in at.expander] == ["1 file skipped, with the reason"]


def test_identical_files_in_one_class_are_noted_not_warned(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    make_class_folders(root / "train", {"a": 4, "b": 4})
    make_class_folders(root / "val", {"a": 1, "b": 1}, size=40)  # another size: not copies of train/
    (root / "train" / "a" / "again.png").write_bytes((root / "train" / "a" / "a_000.png").read_bytes())
    at = _app()
    at.radio(key="data_source").set_value("path").run()
    at.text_input(key="data_path").set_value(str(root)).run()
    at.button(key="use_typed_path").click().run()
    assert not at.exception and not at.warning
    assert at.info[0].value == "1 picture is in the same class folder more than once, so it counts more than once in training. Remove the copies unless that is what you want."
    assert at.expander[0].label == "1 group of identical files (all are used)"
    table = at.expander[0].dataframe[0].value
    copies = [str(root.resolve() / "train" / "a" / name) for name in ("a_000.png", "again.png")]
    assert (table["kind"][0], table["classes"][0], table["splits"][0], table["files"][0]) == ("same class", "a", "train", "\n".join(copies))


def test_bad_folder_shows_the_engine_message(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "one", {"only": 3})
    at = _app()
    at.radio(key="data_source").set_value("path").run()
    at.text_input(key="data_path").set_value(str(root)).run()
    at.button(key="use_typed_path").click().run()
    assert not at.exception
    assert at.error[0].value == f"Found 1 class ('only') in '{root.resolve()}' while at least 2 are required. Add a second sub-folder with images of another class."
    assert at.session_state["dataset"] is None


def test_the_folder_browser_lists_folders_with_counts_and_uses_one(tmp_path: Path, monkeypatch) -> None:
    make_class_folders(tmp_path / "home" / "photos", {"cats": 4, "dogs": 3})
    (tmp_path / "home" / ".cache").mkdir()
    monkeypatch.setenv("TL_CORE_BROWSE_ROOT", str(tmp_path / "home"))
    at = _app()
    at.radio(key="data_source").set_value("path").run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["folder"]) == ["photos"] and list(table["images"]) == ["7"], "hidden folders are not listed"
    assert at.button(key="browse_up").disabled, "the browser never goes above its root"
    at.session_state["browse_dir"] = str(tmp_path / "home" / "photos")
    at.run()
    assert list(at.dataframe[0].value["folder"]) == ["cats", "dogs"]
    at.button(key="browse_use").click().run()
    assert not at.exception
    assert at.subheader[0].value == "7 images in 2 classes"


def test_the_folder_upload_opens_an_upload_for_this_session() -> None:
    at = _app()
    at.radio(key="data_source").set_value("folder").run()
    assert not at.exception
    upload = at.session_state["folder_upload"]
    assert upload.progress().status == "waiting" and len(upload.token) >= 32
    assert "Folder on this computer" in at.caption[0].value, "the page says which route is fastest for big folders"


def test_the_chosen_source_is_kept_when_you_come_back_from_another_page() -> None:
    at = _app()
    at.radio(key="data_source").set_value("path").run()
    at.switch_page("pages/scenario.py").run()
    at.switch_page("pages/data.py").run()
    assert not at.exception
    assert at.radio(key="data_source").value == "path"
    assert at.text_input(key="data_path") is not None  # the folder browser is drawn again


def _shared_app(data_root: Path | None) -> AppTest:
    from tl_core.service.sharing import Access

    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["engine"] = FakeEngine(Access(sharing=True, data_root=data_root, visitor="v"))
    at.run()
    at.radio(key="data_source").set_value("path").run()
    return at


def test_on_a_shared_app_typed_folders_stay_inside_the_data_root(tmp_path: Path) -> None:
    root = tmp_path / "datasets"
    make_class_folders(root / "insects", {"ants": 4, "bees": 4})
    private = make_class_folders(tmp_path / "home" / "private", {"keys": 3, "mail": 3})
    at = _shared_app(root)
    assert not at.exception
    assert f"This app is shared: only folders inside `{root}` can be used." in at.caption[0].value
    for typed in (str(private), f"{root}/../home/private"):
        at.text_input(key="data_path").set_value(typed).run()
        at.button(key="use_typed_path").click().run()
        assert at.error[0].value.startswith(f"'{typed}' is outside '{root.resolve()}', the data folder of this shared app")
        assert at.session_state["dataset"] is None, "nothing of the folder was scanned or shown"
    at.text_input(key="data_path").set_value("insects").run()
    at.button(key="use_typed_path").click().run()
    assert not at.exception and at.subheader[0].value == "8 images in 2 classes"


def test_on_a_shared_app_without_a_data_root_folders_on_the_server_are_off() -> None:
    at = _shared_app(None)
    assert not at.exception
    assert "its owner has named no data folder, so folders on the server cannot be used" in at.info[0].value
    assert not at.get("text_input") and not at.get("dataframe")


def test_the_zip_route_names_its_size_limit_and_the_way_for_bigger_sets() -> None:
    at = _app()
    at.radio(key="data_source").set_value("zip").run()
    assert not at.exception
    assert "A .zip of up to 1,024 MB" in at.caption[0].value and "choose **Upload a folder**" in at.caption[0].value
