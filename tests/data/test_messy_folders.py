"""Messy real-world folders, hostile uploads and faults: nothing lost, a clear message every time.

The "messy" dataset is generated here with Pillow (no binaries are committed):
every format, mode and size the engine must read, files that lie about their
format, files it must skip with a reason, system litter, symbolic links inside
and outside the dataset, and identical files within a class, across classes
and across splits. It goes through the scan, ``python -m tl_core inspect``,
one tiny training epoch and the app's Data page.

Covered elsewhere, not repeated here: a stop request ending a run cleanly with
its best epoch kept (``test_training.py``), a worker that raises ``MemoryError``
ending as "failed" with the out-of-memory suggestion (``test_jobs.py``), and
weights that cannot be downloaded (``test_cli.py``).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from tl_core.data.images import load_image
from tl_core.data.scan import scan_dataset
from tl_core.errors import DataError
from tl_core.service.workspace import Workspace

from conftest import REPO, bomb_reason, make_class_folders, pattern_image, png_claiming_size
from fake_engine import FakeEngine

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"), pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")]

APP = str(REPO / "app.py")

NOT_AN_IMAGE = "not an image Pillow can read (unknown or unsupported format)"
OUTSIDE_FILE = "symbolic link to a file outside the dataset; not followed"
OUTSIDE_FOLDER = "symbolic link to a folder outside the dataset; not followed"
NEXT_TO_SPLITS = "file next to the split folders, not inside a class folder; move it into train/<class>/ to use it"
TRUNCATED_NOTE = (
    "the JPEG data stops before its end marker, so the file looks truncated; "
    "it is kept for now and dropped with a notice if it fails to decode when training starts"
)


# --------------------------------------------------------------------------- the messy dataset


@dataclass
class Messy:
    """The generated dataset and what the scan must make of it."""

    given: Path  # the folder a user would pick (it holds one top folder, as a zip unpacks)
    root: Path  # the dataset inside it
    used: set[str] = field(default_factory=set)
    skipped: dict[str, str] = field(default_factory=dict)
    suspicious: dict[str, str] = field(default_factory=dict)
    ignored: int = 0
    seed: int = 0

    def picture(self, size: tuple[int, int] = (40, 30)) -> Image.Image:
        """A picture unlike any other in the dataset (so no accidental duplicates)."""
        self.seed += 1
        return Image.fromarray(pattern_image(self.seed % 3, self.seed, 48)).resize(size)

    def image(self, relative: str, image: Image.Image | None = None, image_format: str = "PNG", **options) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        (image or self.picture()).save(path, format=image_format, **options)
        self.used.add(str(path))
        return path

    def raw(self, relative: str, data: bytes, reason: str | None = None) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        if reason is None:
            self.used.add(str(path))
        else:
            self.skipped[str(path)] = reason
        return path

    def litter(self, relative: str) -> None:
        """A system file or folder the scan passes over (counted in ignored_system_files)."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if relative.endswith("/"):
            path.mkdir()
            self.picture().save(path / "inside.png")
        else:
            path.write_bytes(b"\x00\x05\x16\x07 litter")
        self.ignored += 1


def _encoded(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def _formats(messy: Messy) -> None:
    """Format by content: every common format, names in upper case, without extension, or lying."""
    messy.image("train/ants/jpeg.jpg", image_format="JPEG")
    messy.image("train/ants/progressive.jpg", image_format="JPEG", progressive=True, quality=90)
    messy.image("train/ants/png.png")
    messy.image("train/ants/still.gif", messy.picture().convert("P"), image_format="GIF")
    frames = [Image.new("RGB", (30, 20), colour) for colour in ((250, 10, 10), (10, 250, 10), (10, 10, 250))]
    messy.image("train/ants/animated.gif", frames[0], image_format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    messy.image("train/ants/bitmap.bmp", image_format="BMP")
    messy.image("train/ants/webp.webp", image_format="WEBP")
    messy.image("train/ants/tiff.tif", image_format="TIFF")
    messy.image("train/ants/UPPER.JPG", image_format="JPEG")
    path = messy.image("train/ants/no_extension")
    messy.suspicious[str(path)] = "no file extension; read as PNG by its content (tools that go by the extension skip it)"
    path = messy.image("train/ants/png_named.jpg")
    messy.suspicious[str(path)] = "named .jpg but the content is PNG; read as PNG (tools that trust the extension may fail on it)"
    path = messy.image("train/ants/tiff_named.jpg", image_format="TIFF")
    messy.suspicious[str(path)] = "named .jpg but the content is TIFF; read as TIFF (tools that trust the extension may fail on it)"
    path = messy.image("train/ants/x.jpg_1088Wx1632H", image_format="JPEG")
    messy.suspicious[str(path)] = "extension '.jpg_1088Wx1632H' is not an image extension; read as JPEG by its content (tools that go by the extension skip it)"


def _modes_and_sizes(messy: Messy) -> None:
    """Colour modes, 1x1 to 5760x3840 pixels, an EXIF-rotated photo and a decompression bomb's header."""
    for mode in ("1", "L", "LA", "RGBA"):
        messy.image(f"train/ants/mode_{mode}.png", messy.picture().convert(mode))
    palette = messy.picture().convert("P")
    messy.image("train/ants/mode_P_transparent.png", palette, transparency=0)
    messy.image("train/ants/mode_CMYK.jpg", messy.picture().convert("CMYK"), image_format="JPEG")
    deep = Image.fromarray((np.arange(600).reshape(20, 30) * 109).astype(np.uint16))
    messy.image("train/ants/mode_I16.png", deep)
    messy.image("train/ants/one_pixel.png", messy.picture((1, 1)))
    messy.image("train/ants/tiny_26.png", messy.picture((26, 26)))
    messy.image("train/ants/large.jpg", messy.picture((5760, 3840)), image_format="JPEG", quality=60)
    sideways = np.zeros((20, 40, 3), dtype=np.uint8)  # stored wide, left half white
    sideways[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # viewers rotate it 90 degrees clockwise: white ends up on top
    messy.image("train/ants/rotated_exif.jpg", Image.fromarray(sideways), image_format="JPEG", exif=exif.tobytes(), quality=95)
    messy.raw("train/ants/bomb.png", png_claiming_size(30000, 30000), reason=bomb_reason(30000, 30000))


def _broken_and_foreign(messy: Messy) -> None:
    """Empty, truncated and non-image files."""
    messy.raw("train/ants/zero_bytes.jpg", b"", reason="empty file (0 bytes)")
    noisy = Image.fromarray(np.random.default_rng(7).integers(0, 256, (200, 200, 3), dtype=np.uint8))
    whole = _encoded(noisy, "JPEG", quality=90)
    path = messy.raw("train/ants/truncated.jpg", whole[: len(whole) // 2])
    messy.suspicious[str(path)] = TRUNCATED_NOTE
    messy.raw("train/ants/notes.txt", b"collected on a sunny day\n", reason=NOT_AN_IMAGE)
    messy.raw("train/ants/labels.csv", b"file,label\njpeg.jpg,ants\n", reason=NOT_AN_IMAGE)
    messy.raw("train/ants/meta.json", b'{"source": "field trip"}\n', reason=NOT_AN_IMAGE)
    messy.raw("README.txt", b"ants and bees\n", reason=NEXT_TO_SPLITS)


def _names_and_structure(messy: Messy, outside: Path) -> None:
    """Non-ASCII names with spaces, nested folders, system litter, symbolic links in and out."""
    messy.image("train/ants/été photo 1.jpg", image_format="JPEG")
    messy.image("train/bees/蜜蜂 2.png")
    messy.image("train/ants/nested/deeper/inner.png")
    for litter in (".DS_Store", "train/ants/.DS_Store", "train/ants/.hidden.jpg", "train/ants/._jpeg.jpg", "train/ants/Thumbs.db", "train/ants/__MACOSX/", "train/ants/.thumbnails/"):
        messy.litter(litter)
    outside.mkdir(parents=True)
    messy.picture().save(outside / "secret.png")
    (outside / "folder").mkdir()
    messy.picture().save(outside / "folder" / "elsewhere.png")
    (messy.root / "train/ants/link_inside.png").symlink_to(messy.root / "train/ants/png.png")
    messy.used.add(str(messy.root / "train/ants/link_inside.png"))
    (messy.root / "train/ants/outside_file.png").symlink_to(outside / "secret.png")
    messy.skipped[str(messy.root / "train/ants/outside_file.png")] = OUTSIDE_FILE
    (messy.root / "train/ants/outside_folder").symlink_to(outside / "folder", target_is_directory=True)
    messy.skipped[str(messy.root / "train/ants/outside_folder")] = OUTSIDE_FOLDER


def _duplicates(messy: Messy) -> None:
    """Identical bytes within a class, across classes and across splits."""
    messy.raw("train/ants/copy of jpeg.jpg", (messy.root / "train/ants/jpeg.jpg").read_bytes())
    both = _encoded(messy.picture(), "PNG")
    messy.raw("train/ants/both classes.png", both)
    messy.raw("train/bees/both classes.png", both)
    leak = _encoded(messy.picture(), "PNG")
    messy.raw("train/bees/leak.png", leak)
    messy.raw("test/bees/leak.png", leak)


def _plain_images(messy: Messy) -> None:
    for split, count in (("train", 4), ("val", 2), ("test", 2)):
        for name in ("ants", "bees"):
            for index in range(count):
                messy.image(f"{split}/{name}/{name}_{index}.png")


def build_messy_dataset(base: Path) -> Messy:
    """Writes the messy dataset under ``base`` and returns it with the expected outcome."""
    given = base / "unzipped"
    messy = Messy(given=given, root=given / "My Photos 2024")
    (given / "__MACOSX").mkdir(parents=True)
    (given / "__MACOSX" / "._My Photos 2024").write_bytes(b"fork")
    (given / ".DS_Store").write_bytes(b"litter")
    _plain_images(messy)
    _formats(messy)
    _modes_and_sizes(messy)
    _broken_and_foreign(messy)
    _names_and_structure(messy, base / "outside")
    _duplicates(messy)
    return messy


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> Messy:
    return build_messy_dataset(tmp_path_factory.mktemp("messy"))


def _path(messy: Messy, relative: str) -> str:
    return str(messy.root / relative)


def expected_duplicates(messy: Messy) -> list[dict]:
    return [
        {"kind": "split leakage", "paths": [_path(messy, "test/bees/leak.png"), _path(messy, "train/bees/leak.png")], "classes": ["bees"], "splits": ["train", "test"]},
        {"kind": "label conflict", "paths": [_path(messy, "train/ants/both classes.png"), _path(messy, "train/bees/both classes.png")], "classes": ["ants", "bees"], "splits": ["train"]},
        {"kind": "same class", "paths": [_path(messy, "train/ants/copy of jpeg.jpg"), _path(messy, "train/ants/jpeg.jpg")], "classes": ["ants"], "splits": ["train"]},
        {"kind": "same class", "paths": [_path(messy, "train/ants/link_inside.png"), _path(messy, "train/ants/png.png")], "classes": ["ants"], "splits": ["train"]},
    ]


# --------------------------------------------------------------------------- scan, inspect, pixels


def test_messy_scan_uses_reports_and_counts_every_file(messy: Messy) -> None:
    dataset = scan_dataset(messy.given)
    summary = dataset.summary()
    assert dataset.root == messy.root  # stepped into the lone top folder, past __MACOSX and .DS_Store
    assert {record.path for record in dataset.records} == messy.used
    assert {item.path: item.reason for item in dataset.skipped} == messy.skipped
    assert {item.path: item.reason for item in dataset.suspicious} == messy.suspicious
    assert summary["duplicates"] == expected_duplicates(messy)
    assert summary["ignored_system_files"] == messy.ignored
    assert summary["files_seen"] == len(messy.used) + len(messy.skipped) == summary["num_images"] + len(summary["skipped"])
    assert summary["split_source"] == "given: test/, train/, val/ folders used as they are"
    assert summary["formats"] == {"JPEG": 10, "PNG": 34, "GIF": 2, "BMP": 1, "WEBP": 1, "TIFF": 2}
    assert {"1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16"} <= set(summary["modes"])
    assert summary["image_size"] == {"min_width": 1, "max_width": 5760, "min_height": 1, "max_height": 3840}
    by_name = {Path(record.path).name: record for record in dataset.records}
    assert (by_name["rotated_exif.jpg"].width, by_name["rotated_exif.jpg"].height) == (20, 40)  # upright size
    assert by_name["inner.png"].class_name == "ants"  # nested folders count for their class
    assert by_name["été photo 1.jpg"].class_name == "ants" and by_name["蜜蜂 2.png"].class_name == "bees"


def test_messy_inspect_prints_the_same_summary(messy: Messy, capsys) -> None:
    from tl_core.cli import main

    code = main(["inspect", str(messy.given)])
    printed = json.loads(capsys.readouterr().out)
    assert code == 0
    assert printed == json.loads(json.dumps(scan_dataset(messy.given).summary()))
    assert printed["files_seen"] == len(messy.used) + len(messy.skipped)
    assert [group["kind"] for group in printed["duplicates"]] == ["split leakage", "label conflict", "same class", "same class"]


def test_every_used_messy_image_reads_as_upright_rgb(messy: Messy) -> None:
    truncated = _path(messy, "train/ants/truncated.jpg")
    for path in sorted(messy.used - {truncated}):
        pixels = load_image(path, 16)
        assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8, path
    animated = load_image(_path(messy, "train/ants/animated.gif"), 8).reshape(-1, 3).mean(axis=0)
    assert animated[0] > 200 and animated[1] < 60 and animated[2] < 60  # the first (red) frame
    upright = load_image(_path(messy, "train/ants/rotated_exif.jpg"), 16)
    assert upright[0, :, 0].mean() > 200 and upright[-1, :, 0].mean() < 50
    with pytest.raises(OSError, match=re.escape("image file is truncated")):
        load_image(truncated, 16)


# --------------------------------------------------------------------------- one tiny training run


@pytest.mark.slow
def test_messy_dataset_trains_one_epoch_and_reports_what_it_dropped(messy: Messy, tmp_path: Path, imagenet_weights: Path, monkeypatch) -> None:
    import keras

    from tl_core.config import TrainConfig
    from tl_core.runs.folder import load_run
    from tl_core.runs.predict import predict_files
    from tl_core.training.run import train

    truncated = _path(messy, "train/ants/truncated.jpg")
    with pytest.raises(OSError) as decoding:
        load_image(truncated, 32)
    decode_reason = f"could not be decoded: OSError: {decoding.value}"
    config = TrainConfig(data_dir=str(messy.given), out_dir=str(tmp_path / "run"), epochs=1, image_size=32, batch_size=8, cache_dir=str(tmp_path / "cache"))
    result = train(config)
    assert result.status == "finished"
    run_summary = json.loads((tmp_path / "run" / "run.json").read_text())
    assert {item["path"]: item["reason"] for item in run_summary["skipped"]} == {**messy.skipped, truncated: decode_reason}
    assert sum(sum(per_class.values()) for per_class in run_summary["data"]["counts"].values()) == len(messy.used) - 1
    assert (tmp_path / "run" / "model.h5").is_file() and (tmp_path / "run" / "model.keras").is_file()

    safe_modes = []
    real_load = keras.models.load_model

    def spy(*arguments, **options):
        safe_modes.append(options.get("safe_mode"))
        return real_load(*arguments, **options)

    monkeypatch.setattr(keras.models, "load_model", spy)
    run = load_run(tmp_path / "run")
    assert safe_modes == [True]  # model files load in Keras' safe mode: no code from the file runs
    bomb = _path(messy, "train/ants/bomb.png")
    predictions = predict_files(run, [_path(messy, "train/ants/tiff_named.jpg"), truncated, bomb])
    assert predictions[0].predicted_class in ("ants", "bees") and not predictions[0].error
    assert predictions[1].error == f"not a readable image (OSError: {decoding.value})"
    assert predictions[2].error == f"not a readable image (ImageTooLargeError: '{bomb}': {bomb_reason(30000, 30000)})"


# --------------------------------------------------------------------------- the app's Data page


def test_messy_dataset_on_the_data_page(messy: Messy) -> None:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["engine"] = FakeEngine()
    at.run()
    at.radio(key="data_source").set_value("path").run()
    at.text_input(key="data_path").set_value(str(messy.given)).run()
    at.button(key="use_typed_path").click().run()
    assert not at.exception and not at.error
    warnings = [warning.value for warning in at.warning]
    assert (
        "Label conflict: 1 picture appears in more than one class (2 files). The model is taught that the same image "
        "is two different things. Keep each picture only in the folder of its right class."
    ) in warnings
    assert (
        "Split leakage: 1 picture appears in more than one of train, validation and test (2 files). The model is then "
        "tested on images it trained on, so its scores look better than they are. Remove the extra copies."
    ) in warnings
    assert at.info[0].value == "2 pictures are in the same class folder more than once, so they count more than once in training. Remove the copies unless that is what you want."
    expanders = {expander.label: expander for expander in at.expander}
    skipped = expanders[f"{len(messy.skipped)} files skipped, with the reason"].dataframe[0].value
    # Every table shows paths inside the dataset folder.
    inside = at.session_state["dataset"].relative
    assert dict(zip(skipped["path"], skipped["reason"], strict=True)) == {inside(path): reason for path, reason in messy.skipped.items()}
    duplicates = expanders["4 groups of identical files (all are used)"].dataframe[0].value
    assert list(dict.fromkeys(zip(duplicates["group"], duplicates["kind"], strict=True))) == [(1, "split leakage"), (2, "label conflict"), (3, "same class"), (4, "same class")]
    assert list(duplicates[duplicates["group"] == 2]["file"]) == ["train/ants/both classes.png", "train/bees/both classes.png"]
    assert list(duplicates[duplicates["group"] == 2]["class"]) == ["ants", "bees"]
    suspicious = expanders[f"{len(messy.suspicious)} files used but worth a look"].dataframe[0].value
    assert dict(zip(suspicious["path"], suspicious["reason"], strict=True)) == {inside(path): reason for path, reason in messy.suspicious.items()}


# --------------------------------------------------------------------------- structure


def test_a_class_with_one_image_cannot_be_split(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data", {"many": 6, "one": 1})
    message = "Class 'one' has 1 image in the whole dataset; at least 3 are needed to split it into train, validation and test. Add images to 'one', or provide your own train/ and val/ folders."
    with pytest.raises(DataError, match=re.escape(message)):
        scan_dataset(root)


def test_a_class_folder_holding_only_system_files_is_empty(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data", {"a": 3, "b": 3})
    (root / "c").mkdir()
    (root / "c" / ".DS_Store").write_bytes(b"litter")
    (root / "c" / "Thumbs.db").write_bytes(b"litter")
    with pytest.raises(DataError, match=re.escape(f"Class 'c' in '{root.resolve()}' has no usable images. Add images to the 'c' folder or remove the folder.")):
        scan_dataset(root)


def test_a_single_class_next_to_macos_litter_is_one_class(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data", {"only": 4})
    (root / "__MACOSX" / "only").mkdir(parents=True)
    (root / "__MACOSX" / "only" / "._only_000.png").write_bytes(b"fork")
    with pytest.raises(DataError, match=re.escape(f"Found 1 class ('only') in '{root.resolve()}' while at least 2 are required. Add a second sub-folder with images of another class.")):
        scan_dataset(root)


def test_more_than_a_hundred_classes_scan_and_split(tmp_path: Path) -> None:
    root = tmp_path / "many"
    for index in range(105):
        for copy in range(3):
            path = root / f"class_{index:03d}" / f"{copy}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4, 4), (index, copy, 7)).save(path)
    dataset = scan_dataset(root)
    assert dataset.num_classes == 105 and len(dataset.records) == 315
    for split in ("train", "val", "test"):
        assert set(Counter(record.class_name for record in dataset.split(split)).values()) == {1}
        assert len(dataset.split(split)) == 105
    assert dataset.summary()["duplicates"] == []


def test_a_zip_with_one_top_folder_and_macosx_scans_as_its_classes(tmp_path: Path) -> None:
    entries = {}
    for class_index, name in enumerate(("cats", "dogs")):
        for index in range(3):
            entries[f"Pets/{name}/{index}.png"] = _encoded(Image.fromarray(pattern_image(class_index, index)), "PNG")
            entries[f"__MACOSX/Pets/{name}/._{index}.png"] = b"\x00\x05\x16\x07 resource fork"
    entries["Pets/.DS_Store"] = b"litter"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    workspace = Workspace.create(tmp_path / "sessions")  # kept referenced: a dropped workspace removes its folder
    folder = workspace.unpack_zip(io.BytesIO(buffer.getvalue()), label="pets")
    dataset = scan_dataset(folder)
    assert dataset.root == (folder / "Pets").resolve()
    assert dataset.class_names == ["cats", "dogs"] and len(dataset.records) == 6
    assert dataset.skipped == [] and dataset.ignored_system_files == 1


# --------------------------------------------------------------------------- decompression bombs


# --------------------------------------------------------------------------- export faults


# --------------------------------------------------------------------------- server settings


