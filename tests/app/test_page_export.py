"""The Export page through the router, and the prediction cards it draws.

AppTest cannot upload files, so the "Try the model" cards are checked by
running ``app_charts.show_predictions`` (what the page calls after an
upload) in a small script of its own; the browser test covers the upload.
"""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from ui.charts import confidence_bars

from conftest import REPO, make_class_folders
from fake_engine import FakeEngine, write_canned_run

APP = str(REPO / "app.py")


def open_export_page(run_dir: Path | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["engine"] = FakeEngine()
    if run_dir is not None:
        at.session_state["run_dir"] = str(run_dir)
    at.run()
    at.switch_page("pages/export.py").run()
    return at


def texts(at: AppTest, kind: str) -> str:
    return "\n".join(str(element.value) for element in at.get(kind))


def test_without_a_run_the_page_points_to_train():
    at = open_export_page()

    assert not at.exception
    assert at.title[0].value == "6 · Export and try"
    assert "No trained model yet" in at.info[0].value
    assert [link.proto.page for link in at.get("page_link")] == ["train"]
    assert not at.get("download_button")


def test_every_run_file_has_a_download_button_labelled_with_its_size(tmp_path):
    run_dir = write_canned_run(tmp_path / "run", ["ants", "bees"])
    (run_dir / "model.h5").write_bytes(b"0" * 9_129_656)  # the model.tflite: 9.1 MB of 10^6 bytes, not 8.7
    at = open_export_page(run_dir)

    assert not at.exception
    labels = [button.proto.label for button in at.get("download_button")]
    assert labels[0] == "model.h5 · 9.1 MB"
    assert labels[1] == "model.keras · 16 bytes"
    assert [label.split(" · ")[0] for label in labels] == ["model.h5", "model.keras", "labels.json", "run.json", "metrics.json"]
    assert all(button.proto.ignore_rerun for button in at.get("download_button"))
    assert "accuracy **75.0%** on 8 held-out images, input 32×32 px" in texts(at, "markdown")
    assert "resized to 32×32" in texts(at, "markdown")
    code = at.code[0].value
    assert 'keras.models.load_model("model.h5", compile=False)' in code
    assert ".resize((32, 32), Image.Resampling.BILINEAR)" in code
    assert 'json.load(open("labels.json"))' in code


def test_with_deep_images_every_snippet_reads_them_as_training_did(tmp_path):
    run_dir = write_canned_run(tmp_path / "run", ["cells", "debris"])
    plain = open_export_page(run_dir)
    summary = json.loads((run_dir / "run.json").read_text())
    summary["data"]["modes"] = {"I;16": 30, "L": 2}  # 16-bit microscope images
    (run_dir / "run.json").write_text(json.dumps(summary))
    deep = open_export_page(run_dir)

    assert not deep.exception
    assert all("def read(" not in code.value and "Image.open(\"photo.jpg\")" in code.value for code in plain.code[:3])
    for code in deep.code[:3]:  # Keras, LiteRT and ONNX Runtime
        assert "def read(path):" in code.value and "def stretched(" in code.value and 'image = read("photo.jpg").convert("RGB").resize((32, 32), Image.Resampling.BILINEAR)' in code.value
        compile(code.value, "snippet", "exec")
    assert "more than 8 bits per pixel" in texts(deep, "markdown")
    summary["data"]["modes"] = {"RGB;16": 30}  # 16 bits per colour (stained slides, satellite scenes)
    (run_dir / "run.json").write_text(json.dumps(summary))
    assert all("def read(path):" in code.value for code in open_export_page(run_dir).code[:3])


def test_with_transparent_images_the_snippets_lay_them_over_white_as_training_did(tmp_path):
    run_dir = write_canned_run(tmp_path / "run", ["icons", "logos"])
    summary = json.loads((run_dir / "run.json").read_text())
    summary["data"]["modes"] = {"RGBA": 20, "RGB": 5}  # cut-out product photos, icons
    (run_dir / "run.json").write_text(json.dumps(summary))
    at = open_export_page(run_dir)

    assert not at.exception
    assert all("def read(path):" in code.value and 'read("photo.jpg")' in code.value for code in at.code[:3])
    assert all("def stretched(" not in code.value for code in at.code[:3])  # the 16-bit part only where the images are deep
    assert "Your images may have transparent areas, which `read` lays over white, as training did:" in texts(at, "markdown") and "more than 8 bits" not in texts(at, "markdown")


def test_a_model_with_a_centre_crop_asks_for_the_larger_frame_everywhere(tmp_path):
    run_dir = write_canned_run(tmp_path / "run", ["ants", "bees"])
    summary = json.loads((run_dir / "run.json").read_text())
    summary.setdefault("config", {})["centre_crop"] = True  # trained on the middle 32 px of images 40 px on a side
    (run_dir / "run.json").write_text(json.dumps(summary))
    at = open_export_page(run_dir)

    assert not at.exception
    assert "input 40×40 px (the model keeps the middle 32×32 px itself, as it was trained)." in texts(at, "markdown")
    assert "resized to 40×40" in texts(at, "markdown") and "RGB 0-255, 40×40" in texts(at, "markdown")
    assert all(".resize((40, 40), Image.Resampling.BILINEAR)" in code.value for code in at.code[:3])


def test_the_try_section_offers_an_image_uploader(tmp_path):
    at = open_export_page(write_canned_run(tmp_path / "run", ["ants", "bees"]))

    assert not at.exception
    assert "Try the model" in texts(at, "subheader")
    uploader = at.get("file_uploader")[0].proto
    assert uploader.multiple_files
    assert {".jpg", ".png"} <= set(uploader.type)
    assert "Upload one or more photos" in texts(at, "caption")
    assert any(link.proto.page == "data" for link in at.get("page_link"))


def test_a_missing_file_is_shown_as_missing(tmp_path):
    run_dir = write_canned_run(tmp_path / "run", ["ants", "bees"])
    (run_dir / "model.keras").unlink()
    at = open_export_page(run_dir)

    assert not at.exception
    assert len(at.get("download_button")) == 4
    assert at.button(key="download_model.keras").disabled
    assert at.button(key="download_model.keras").label == "model.keras · missing"


def predictions_script(run_dir: str, image_dir: str) -> None:
    """Runs as its own small app: what the Export page draws after an upload."""
    from pathlib import Path

    from tl_core.runs.predict import Prediction
    from ui.charts import show_predictions

    from fake_engine import FakeEngine

    engine = FakeEngine()
    paths = [str(path) for path in sorted(Path(image_dir).glob("*/*.png"))][:2]
    predictions = engine.predict(run_dir, paths, top_k=3) + [Prediction("/try/003_broken.png", None, None, [], error="not a readable image (UnidentifiedImageError)")]
    previews = engine.thumbnails(paths, size=160) + [None]
    show_predictions(predictions, previews, ["first.png", "second.png", "broken.png"])


def test_prediction_cards_show_the_image_the_class_and_confidence_bars(tmp_path):
    run_dir = write_canned_run(tmp_path / "run", ["ants", "bees"])
    images = make_class_folders(tmp_path / "images", {"ants": 1, "bees": 1}, size=32)
    at = AppTest.from_function(predictions_script, args=(str(run_dir), str(images)), default_timeout=30)
    at.run()

    assert not at.exception
    markdown = texts(at, "markdown")
    assert "**ants** · 80% sure" in markdown
    assert "**bees** · 80% sure" in markdown
    assert "first.png" in texts(at, "caption") and "second.png" in texts(at, "caption")
    assert len(at.get("image")) == 2
    bars = [json.loads(chart.proto.spec)["data"][0] for chart in at.get("plotly_chart")]
    assert bars[0]["y"] == ["bees", "ants"] and bars[0]["text"] == ["20%", "80%"]
    assert "**broken.png**: no prediction, not a readable image (UnidentifiedImageError)." in at.warning[0].value


def test_confidence_bars_put_the_most_probable_class_on_top():
    figure = confidence_bars([("bees", 0.7), ("ants", 0.2), ("wasps", 0.1)])

    bar = figure.data[0]
    assert list(bar.y) == ["wasps", "ants", "bees"]  # plotly draws the last category at the top
    assert list(bar.text) == ["10%", "20%", "70%"]
    assert bar.orientation == "h"


def test_portable_files_are_offered_with_their_check_and_missing_ones_can_be_made(tmp_path):
    run_dir = write_canned_run(tmp_path / "run", ["ants", "bees"])
    (run_dir / "model.tflite").write_bytes(b"1" * 2048)
    summary = json.loads((run_dir / "run.json").read_text())
    summary["exports"] = {
        "tflite": {"format": "tflite", "file": "model.tflite", "ok": True, "message": "Checked: probabilities within 2.4e-07 of the Keras model's on 32 test images."},
        "onnx": {"format": "onnx", "file": "model.onnx", "ok": False, "message": "tf2onnx could not convert this model: Unsupported op: MagicPool"},
    }
    (run_dir / "run.json").write_text(json.dumps(summary))
    at = open_export_page(run_dir)

    assert not at.exception
    assert "Run it without Keras" in texts(at, "subheader")
    labels = [button.proto.label for button in at.get("download_button")]
    assert "model.tflite · 2.0 kB" in labels and not any(label.startswith("model.onnx") for label in labels)
    markdown = texts(at, "markdown")
    assert "**TensorFlow Lite**: Checked: probabilities within 2.4e-07 of the Keras model's on 32 test images." in markdown
    assert "**ONNX**: :orange[tf2onnx could not convert this model: Unsupported op: MagicPool]" in markdown
    assert "**TensorFlow Lite, 8-bit weights**: not made yet" in markdown
    codes = [block.value for block in at.code]
    assert any('Interpreter(model_path="model.tflite")' in code and ".resize((32, 32), Image.Resampling.BILINEAR)" in code for code in codes)
    assert any('session.run(None, {"image":' in code for code in codes)

    make = at.button(key="export_make")
    assert make.label == "Make model_int8.tflite, model.onnx"
    make.click().run()

    assert not at.exception
    assert at.session_state["engine"].exported == ["int8", "onnx"]
    labels = [button.proto.label for button in at.get("download_button")]
    assert {"model.tflite · 2.0 kB", "model_int8.tflite · 14 bytes", "model.onnx · 14 bytes"} <= set(labels)
    assert "**ONNX**: Checked: fake engine." in texts(at, "markdown")
    assert not at.get("button") or all(button.key != "export_make" for button in at.button)


class RefusingEngine(FakeEngine):
    """Makes the float files; the 8-bit one fails its check (1 of 32 images gets another top class), as a weak model's can."""

    def export_portable(self, run_dir, formats):
        from tl_core.runs.portable import FORMATS, ExportCheck, record_checks

        checks = [check for check in super().export_portable(run_dir, [name for name in formats if name != "int8"])]
        if "int8" in formats:
            refused = ExportCheck("int8", FORMATS["int8"], False, "Not kept: same top class as the Keras model on 97% of 32 of the run's held-out images (at least 98% needed).")
            record_checks(Path(run_dir), [refused])
            checks.append(refused)
        return checks


def test_after_making_the_files_the_page_shows_what_was_made_and_why_one_was_not_kept(tmp_path):
    run_dir = write_canned_run(tmp_path / "run", ["ants", "bees"])
    at = AppTest.from_file(APP, default_timeout=30)
    at.session_state["engine"] = RefusingEngine()
    at.session_state["run_dir"] = str(run_dir)
    at.run()
    at.switch_page("pages/export.py").run()
    assert at.button(key="export_make").label == "Make model.tflite, model_int8.tflite, model.onnx"

    at.button(key="export_make").click().run()

    assert not at.exception and not at.error
    labels = [button.proto.label for button in at.get("download_button")]
    assert {"model.tflite · 14 bytes", "model.onnx · 14 bytes"} <= set(labels) and not any(label.startswith("model_int8") for label in labels)
    assert "**TensorFlow Lite, 8-bit weights**: :orange[Not kept: same top class as the Keras model on 97% of 32 of the run's held-out images (at least 98% needed).]" in texts(at, "markdown")
    assert at.button(key="export_make").label == "Make model_int8.tflite"  # offered again, not left showing the files as not made
