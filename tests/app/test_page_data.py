"""The Data page: every way in, the summary, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from conftest import REPO, make_class_folders, sixteen_bit_colour_png
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
    assert at.subheader[0].value == "digits · 240 images in 4 classes"
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
    # One row per file, its path inside the dataset: both copies can be read in full.
    assert list(table["file"]) == ["train/a/a_000.png", "train/a/again.png"]
    assert list(table["group"]) == [1, 1] and list(table["kind"]) == ["same class"] * 2 and list(table["class"]) == ["a", "a"] and list(table["split"]) == ["train", "train"]


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
    assert at.subheader[0].value == "photos · 7 images in 2 classes"


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
    assert not at.exception and at.subheader[0].value == "insects · 8 images in 2 classes"


def test_on_a_shared_app_without_a_data_root_folders_on_the_server_are_off() -> None:
    at = _shared_app(None)
    assert not at.exception
    assert "its owner has named no data folder, so folders on the server cannot be used" in at.info[0].value
    assert not at.get("text_input") and not at.get("dataframe")


def test_the_zip_route_names_its_size_limit_and_the_way_for_bigger_sets() -> None:
    at = _app()
    at.radio(key="data_source").set_value("zip").run()
    assert not at.exception
    assert "A .zip of up to 1.1 GB (1,024 MiB;" in at.caption[0].value and "choose **Upload a folder**" in at.caption[0].value


def test_a_folder_upload_keeps_the_name_of_the_chosen_folder(tmp_path: Path, monkeypatch) -> None:
    """The browser sends 'my photos/train/cats/1.png'...: the Data page, the History and run.json call the data 'my photos',
    the session's copy of it is named only in a details box, the file tables show paths inside it and captions stay short."""
    import json as json_module

    import ui.folder_upload
    from tl_core.data.records import Dataset

    source = make_class_folders(tmp_path / "source", {"cats": 4, "dogs": 4})
    long_name = source / "cats" / "10140303196_b88d3d6cec_long_name.png"
    (source / "cats" / "cats_000.png").rename(long_name)
    (source / "dogs" / "copy_of_a_cat.png").write_bytes((source / "cats" / "cats_001.png").read_bytes())
    files = {f"my photos/{path.relative_to(source).as_posix()}": path.read_bytes() for path in sorted(source.rglob("*.png"))}
    ended = {}

    def fake_uploader(upload, key="folder_uploader", note=""):
        """What the browser does: the plan, one batch with every file, then 'finished' once."""
        if upload.progress().status == "waiting" and not ended:
            upload.begin(len(files), sum(len(data) for data in files.values()))
            manifest = json_module.dumps({"files": [{"path": path, "size": len(data)} for path, data in files.items()]}).encode()
            upload.receive_batch(manifest + b"\n" + b"".join(files.values()))
            ended.update(status="finished", files=len(files), bytes=sum(len(data) for data in files.values()), seconds=0.5)
            return dict(ended)
        return None

    monkeypatch.setattr(ui.folder_upload, "folder_uploader", fake_uploader)
    at = _app()
    at.radio(key="data_source").set_value("folder").run()
    assert not at.exception
    dataset: Dataset = at.session_state["dataset"]
    assert dataset.root.name == "my photos" and at.session_state["data_dir"].endswith("my photos")
    assert at.subheader[0].value == "my photos · 9 images in 2 classes"
    details = next(expander for expander in at.expander if expander.label == "Where the app keeps this copy")
    assert str(dataset.root) in details.caption[0].value
    assert [caption.value for caption in at.caption if str(dataset.root) in caption.value] == [details.caption[0].value], "the staging path only in the details box"
    assert at.session_state["folder_upload_note"].startswith("Sent 9 files (") and " kB) in 0.5 s." in at.session_state["folder_upload_note"]
    table = next(expander for expander in at.expander if "identical files" in expander.label).dataframe[0].value
    assert sorted(table["file"]) == ["cats/cats_001.png", "dogs/copy_of_a_cat.png"]
    captions = [caption for image in at.get("image") for caption in image.proto.imgs and [item.caption for item in image.proto.imgs]]
    assert "101403…ame.png" in captions and all(len(caption) <= 14 for caption in captions)

    # Trained (fake engine), the run carries the name into run.json and the History.
    from tl_core.config import TrainConfig

    at.session_state["train_config"] = TrainConfig(data_dir=str(dataset.root), out_dir="", epochs=5, image_size=32)
    at.switch_page("pages/train.py").run()
    at.button(key="train_start").click().run()
    at.session_state["job"].wait(5)
    at.switch_page("pages/history.py").run()
    assert not at.exception
    assert list(at.dataframe[0].value["dataset"]) == ["my photos"]
    run_json = json_module.loads((Path(at.session_state["job"].state().run_dir) / "run.json").read_text())
    assert Path(run_json["data"]["root"]).name == "my photos"
    assert "9 images in `my photos`" in " ".join(caption.value for caption in at.caption)


def test_deep_greyscale_is_named_with_how_it_is_read(tmp_path: Path) -> None:
    from PIL import Image

    root = make_class_folders(tmp_path / "scans", {"normal": 3, "tumour": 3})
    for index in range(4):
        ramp = np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (64, 1))  # 12 bits in a 16-bit PNG
        Image.fromarray(ramp).save(root / ("normal", "tumour")[index % 2] / f"scan_{index}.png")
    colours = np.stack([np.tile(np.arange(0, 4096, 64, dtype=np.uint16), (64, 1))] * 3, axis=2)  # 12 bits per colour in a 16-bit PNG
    sixteen_bit_colour_png(root / "tumour" / "stained.png", colours)
    at = _app()
    at.radio(key="data_source").set_value("path").run()
    at.text_input(key="data_path").set_value(str(root)).run()
    at.button(key="use_typed_path").click().run()

    assert not at.exception
    assert any("5 images have more than 8 bits per pixel" in caption.value and "brightest pixel" in caption.value for caption in at.caption)
    plain = _app()
    plain.radio(key="data_source").set_value("path").run()
    plain.text_input(key="data_path").set_value(str(make_class_folders(tmp_path / "photos", {"a": 3, "b": 3}))).run()
    plain.button(key="use_typed_path").click().run()
    assert not any("8 bits" in caption.value for caption in plain.caption)
