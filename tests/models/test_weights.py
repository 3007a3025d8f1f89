"""Missing ImageNet weights: every missing file named at once, where it goes, and a loaded file saved where Keras reads it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tl_core.errors import ConfigError, WeightsError
from tl_core.models.backbones import get_backbone
from tl_core.models.weights import CLASSIFIER_WEIGHTS_FILE, HDF5_SIGNATURE, install_weights, missing_weights, missing_weights_message, needed_weights
from tl_core.service.sharing import Access

from conftest import REPO, make_class_folders
from fake_engine import FakeEngine

MOBILENET_V2 = get_backbone("mobilenet_v2")


@pytest.fixture
def empty_keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    return tmp_path / "keras_home" / "models"


def test_the_message_names_every_missing_file_and_the_folder_and_no_option(empty_keras_home: Path) -> None:
    missing = missing_weights(needed_weights(MOBILENET_V2))
    assert [item.name for item in missing] == [MOBILENET_V2.weights_file, CLASSIFIER_WEIGHTS_FILE]
    message = missing_weights_message(missing)
    assert f"'{MOBILENET_V2.weights_file}' (MobileNetV2 without its classifier top" in message
    assert f"'{CLASSIFIER_WEIGHTS_FILE}' (MobileNet 0.75's ImageNet classifier" in message
    assert f"Put them in '{empty_keras_home}'" in message and "load each file here" in message
    assert not re.search(r"--\w", message), "an app message holds no command-line option"
    assert missing_weights_message([]) == ""


def test_a_joined_backbone_needs_each_network_s_file_and_names_the_missing_one(empty_keras_home: Path) -> None:
    from tl_core.models.build import build_backbone
    from tl_core.models.weights import weights_identity

    joined = get_backbone("mobilenet_v2+mobilenet_0.75")
    needed = needed_weights(joined, with_classifier=False)
    assert [item.name for item in needed] == list(joined.weights_files) == [MOBILENET_V2.weights_file, "mobilenet_7_5_224_tf_no_top.h5"]
    assert weights_identity(joined, "imagenet") == "|".join(weights_identity(member, "imagenet") for member in joined.member_specs)
    missing = missing_weights(needed)
    assert [item.name for item in missing] == list(joined.weights_files)
    assert "MobileNet (0.75 width) without its classifier top" in missing_weights_message(missing)
    with pytest.raises(ConfigError, match="one weights file cannot start it"):
        build_backbone(joined, str(empty_keras_home / "mine.h5"))


def test_a_loaded_file_is_checked_and_saved_where_keras_reads_it(empty_keras_home: Path) -> None:
    needed = needed_weights(MOBILENET_V2)
    with pytest.raises(WeightsError, match=re.escape("'my_weights.h5' is not one of the weights files the app needs here")):
        install_weights("my_weights.h5", HDF5_SIGNATURE + b"rest", needed)
    with pytest.raises(WeightsError, match="is not an HDF5 weights file"):
        install_weights(CLASSIFIER_WEIGHTS_FILE, b"<html>not found</html>", needed)
    saved = install_weights(CLASSIFIER_WEIGHTS_FILE, HDF5_SIGNATURE + b"rest", needed)
    assert saved == empty_keras_home / CLASSIFIER_WEIGHTS_FILE and saved.read_bytes() == HDF5_SIGNATURE + b"rest"
    assert [item.name for item in missing_weights(needed)] == [MOBILENET_V2.weights_file]
    with pytest.raises(WeightsError, match="This app is shared, so weights are installed by whoever runs it"):
        FakeEngine(Access(sharing=True)).install_weights("mobilenet_v2", MOBILENET_V2.weights_file, HDF5_SIGNATURE)


def test_the_pages_name_both_files_offer_a_picker_and_wait_for_the_backbone_file(tmp_path: Path, empty_keras_home: Path) -> None:
    from tl_core.config import TrainConfig
    from tl_core.data.scan import scan_dataset

    folder = make_class_folders(tmp_path / "data", {"ants": 6, "bees": 6}, size=32)
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=30)
    at.session_state["engine"] = FakeEngine()
    at.session_state["dataset"] = scan_dataset(folder)
    at.session_state["data_dir"] = str(folder)
    at.session_state["train_config"] = TrainConfig(data_dir=str(folder), out_dir="", epochs=5, image_size=32).validated()
    at.run()
    for page, button in (("pages/labels.py", "find_label_issues"), ("pages/scenario.py", "scenario_measure"), ("pages/train.py", "train_start")):
        at.switch_page(page).run()
        assert not at.exception, page
        warning = next(element.value for element in at.warning if "not on this computer" in element.value)
        assert MOBILENET_V2.weights_file in warning and CLASSIFIER_WEIGHTS_FILE in warning and str(empty_keras_home) in warning, page
        assert at.button(key=button).disabled, page
        assert "--weights" not in warning

    # With the backbone's file in place the actions run; the classifier's absence is still said, but waits for nothing.
    empty_keras_home.mkdir(parents=True, exist_ok=True)
    (empty_keras_home / MOBILENET_V2.weights_file).write_bytes(HDF5_SIGNATURE)
    at.switch_page("pages/labels.py").run()
    assert not at.button(key="find_label_issues").disabled
    assert CLASSIFIER_WEIGHTS_FILE in at.warning[0].value and MOBILENET_V2.weights_file not in at.warning[0].value
