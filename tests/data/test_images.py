"""Reading one image: every mode becomes upright RGB of the requested size; the pixel limit guards against decompression bombs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tl_core.data import images
from tl_core.data.images import MAX_IMAGE_PIXELS_ENVIRONMENT_VARIABLE, OVER_WHITE_READER, STANDALONE_READER, ImageTooLargeError, eight_bit_values, load_image, to_rgb
from tl_core.data.scan import scan_dataset
from tl_core.errors import ConfigError

from conftest import bomb_reason, make_class_folders, png_claiming_size, sixteen_bit_colour_png, sixteen_bit_colour_tiff


def _save(image: Image.Image, path: Path, image_format: str, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=image_format, **options)
    return path


def test_every_mode_becomes_rgb_of_the_requested_size(tmp_path: Path) -> None:
    red = np.zeros((20, 30, 3), dtype=np.uint8)
    red[..., 0] = 255
    rgba = np.zeros((20, 30, 4), dtype=np.uint8)
    rgba[..., 0] = 255
    rgba[:, 15:, 3] = 255  # left half transparent: must become white, not black
    palette = Image.fromarray(red).convert("P")
    palette.info["transparency"] = 0
    cases = {
        "rgb.jpg": _save(Image.fromarray(red), tmp_path / "rgb.jpg", "JPEG"),
        "gray.png": _save(Image.fromarray(red).convert("L"), tmp_path / "gray.png", "PNG"),
        "bw.bmp": _save(Image.fromarray(red).convert("1"), tmp_path / "bw.bmp", "BMP"),
        "rgba.png": _save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png", "PNG"),
        "palette.gif": _save(Image.fromarray(red).convert("P"), tmp_path / "palette.gif", "GIF"),
        "cmyk.jpg": _save(Image.fromarray(red).convert("CMYK"), tmp_path / "cmyk.jpg", "JPEG"),
        "deep.png": _save(Image.fromarray((np.ones((20, 30)) * 65535).astype(np.uint16)), tmp_path / "deep.png", "PNG"),
        "webp_no_extension": _save(Image.fromarray(red), tmp_path / "webp_no_extension", "WEBP"),
    }
    for name, path in cases.items():
        pixels = load_image(path, 16)
        assert pixels.shape == (16, 16, 3) and pixels.dtype == np.uint8, name
    assert load_image(cases["rgba.png"], 16)[8, 0].tolist() == [255, 255, 255]
    assert load_image(cases["rgba.png"], 16)[8, 15].tolist() == [255, 0, 0]
    assert load_image(cases["deep.png"], 16)[0, 0].tolist() == [255, 255, 255]
    assert load_image(cases["rgb.jpg"], 16)[8, 8, 0] > 240


def test_a_twelve_bit_image_in_a_sixteen_bit_file_keeps_its_grey_levels(tmp_path: Path) -> None:
    ramp = np.tile(np.arange(0, 4096, 16, dtype=np.uint16), (8, 1))  # 256 grey levels of a 12-bit camera
    for name, image_format in (("ramp.png", "PNG"), ("ramp.tif", "TIFF")):
        path = _save(Image.fromarray(ramp), tmp_path / name, image_format)
        assert Image.open(path).mode.startswith("I")
        pixels = load_image(path, 256)[4, :, 0]
        assert pixels.max() == 255 and len(np.unique(pixels)) > 200, name  # divided by 65,535 it kept 16 levels, all below 16


def _twelve_bit_colours(height: int = 9, width: int = 11) -> np.ndarray:
    """A camera's 12 bits per colour (0-4095) in 16-bit values: every byte of each value matters."""
    return np.random.default_rng(3).integers(0, 4096, (height, width, 3)).astype(np.uint16)


def test_sixteen_bits_per_colour_are_read_whole_and_stretched_together(tmp_path: Path) -> None:
    values = _twelve_bit_colours()
    expected = eight_bit_values(values)  # the three colours stretched together to the brightest value
    files = {
        "png": sixteen_bit_colour_png(tmp_path / "colour.png", values),
        "tiff, little-endian": sixteen_bit_colour_tiff(tmp_path / "little.tif", values, "<"),
        "tiff, big-endian": sixteen_bit_colour_tiff(tmp_path / "big.tif", values, ">"),
        "tiff, compressed (libtiff)": sixteen_bit_colour_tiff(tmp_path / "deflate.tif", values, ">", compressed=True),
    }
    for name, path in files.items():
        assert Image.open(path).mode == "RGB" and np.asarray(Image.open(path)).max() < 16, name  # Pillow alone: the high bytes, nearly black
        assert images.probe_image(path, 10**6).mode == "RGB;16", name
        np.testing.assert_array_equal(load_image(path, 11)[:, :, :], np.asarray(Image.fromarray(expected).resize((11, 11), Image.Resampling.BILINEAR)), err_msg=name)
    # With transparency: the colours as above, the alpha's high byte laid over white.
    alpha = np.full((9, 11, 1), 65535, dtype=np.uint16)
    alpha[:, :5] = 0
    path = sixteen_bit_colour_png(tmp_path / "with_alpha.png", np.concatenate([values, alpha], axis=2))
    assert images.probe_image(path, 10**6).mode == "RGBA;16"
    picture = images.deep_colour(Image.open(path))
    assert picture.mode == "RGBA" and np.array_equal(np.asarray(picture)[..., :3], expected)
    assert np.asarray(to_rgb(picture))[:, :5].min() == 255 and np.array_equal(np.asarray(to_rgb(picture))[:, 5:], expected[:, 5:])


def test_eight_bit_colour_and_sixteen_bit_grey_are_not_read_twice(tmp_path: Path) -> None:
    plain = _save(Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)), tmp_path / "plain.png", "PNG")
    grey = _save(Image.fromarray(np.zeros((4, 4), dtype=np.uint16)), tmp_path / "grey.png", "PNG")
    grey_alpha = sixteen_bit_colour_png(tmp_path / "grey_alpha.png", np.full((4, 4, 2), 4000, dtype=np.uint16))  # Pillow reads it at 8 bits only
    for path in (plain, grey, grey_alpha):
        assert images.deep_colour(Image.open(path)) is None
        assert load_image(path, 4).shape == (4, 4, 3)
    assert images.probe_image(plain, 10**6).mode == "RGB" and images.probe_image(grey_alpha, 10**6).mode == "RGBA"


def test_sixteen_bit_values_are_stretched_by_a_table_that_gives_the_general_rules_pixels() -> None:
    generator = np.random.default_rng(0)
    for top in (0, 1, 200, 255, 256, 1000, 4095, 65535):
        values = generator.integers(0, top + 1, (20, 30, 3)).astype(np.uint16)
        np.testing.assert_array_equal(eight_bit_values(values), eight_bit_values(values.astype(np.int64)), err_msg=str(top))  # int64: the general rule


def test_deep_values_are_stretched_to_the_brightest_pixel_and_eight_bit_values_kept() -> None:
    assert eight_bit_values(np.array([[0, 2048, 4096]], dtype=np.uint16)).tolist() == [[0, 128, 255]]
    assert eight_bit_values(np.array([[0, 65535]], dtype=np.uint16)).tolist() == [[0, 255]]
    assert eight_bit_values(np.array([[3, 200]], dtype=np.uint16)).tolist() == [[3, 200]]  # 8-bit values in a 16-bit file
    assert eight_bit_values(np.array([[0.0, 0.25, np.nan]], dtype=np.float32)).tolist() == [[0, 255, 0]]
    assert eight_bit_values(np.array([[-1.0, 0.0, 1.0]], dtype=np.float32)).tolist() == [[0, 128, 255]]
    assert eight_bit_values(np.zeros((2, 2), dtype=np.uint16)).tolist() == [[0, 0], [0, 0]]


def test_the_reader_shown_for_use_without_this_package_gives_the_same_pixels(tmp_path: Path) -> None:
    namespace = {"Image": Image, "np": np}
    exec(STANDALONE_READER, namespace)  # the code the Export page gives users whose images are deep
    generator = np.random.default_rng(0)
    cases = {
        "twelve_bit.png": Image.fromarray(generator.integers(0, 4096, (9, 7)).astype(np.uint16)),
        "eight_bit_values.tif": Image.fromarray(generator.integers(0, 200, (9, 7)).astype(np.uint16)),
        "flat.png": Image.fromarray(np.full((9, 7), 900, dtype=np.uint16)),
        "float.tif": Image.fromarray(generator.normal(0, 1, (9, 7)).astype(np.float32)),
        "plain.png": Image.fromarray(generator.integers(0, 256, (9, 7, 3)).astype(np.uint8)),
        "half_transparent.png": Image.fromarray(generator.integers(0, 256, (9, 7, 4)).astype(np.uint8), "RGBA"),  # its hidden colours are not white
        "grey_transparent.png": Image.fromarray(generator.integers(0, 256, (9, 7, 2)).astype(np.uint8), "LA"),
    }
    palette = Image.fromarray(generator.integers(0, 256, (9, 7, 3)).astype(np.uint8)).convert("P")
    palette.info["transparency"] = 0
    cases["palette_transparent.png"] = palette
    paths = [_save(image, tmp_path / name, "PNG" if name.endswith("png") else "TIFF") for name, image in cases.items()]
    colours = _twelve_bit_colours()
    paths += [sixteen_bit_colour_png(tmp_path / "colour.png", colours), sixteen_bit_colour_tiff(tmp_path / "colour.tif", colours, ">")]
    paths.append(sixteen_bit_colour_tiff(tmp_path / "deflate.tif", colours, "<", compressed=True))
    opaque = np.full((9, 11, 1), 65535, dtype=np.uint16)
    paths.append(sixteen_bit_colour_png(tmp_path / "grey_alpha.png", np.concatenate([colours[..., :1], opaque], axis=2)))  # read at 8 bits by both
    alpha = np.full((9, 11, 1), 40000, dtype=np.uint16)
    paths.append(sixteen_bit_colour_png(tmp_path / "colour_alpha.png", np.concatenate([colours, alpha], axis=2)))
    for path in paths:
        ours = load_image(path, 8)  # as training reads it: whole values, then resized
        theirs = np.asarray(namespace["read"](path).convert("RGB").resize((8, 8), Image.Resampling.BILINEAR))
        assert np.array_equal(ours, theirs), path.name


def test_the_short_reader_for_transparent_images_gives_the_same_pixels(tmp_path: Path) -> None:
    namespace = {"Image": Image}
    exec(OVER_WHITE_READER, namespace)  # the code the Export page gives users whose images are transparent but 8-bit
    generator = np.random.default_rng(1)
    palette = Image.fromarray(generator.integers(0, 256, (9, 7, 3)).astype(np.uint8)).convert("P")
    palette.info["transparency"] = palette.getpixel((0, 0))  # a colour some pixel has
    cases = {
        "half_transparent.png": Image.fromarray(generator.integers(0, 256, (9, 7, 4)).astype(np.uint8), "RGBA"),
        "grey_transparent.png": Image.fromarray(generator.integers(0, 256, (9, 7, 2)).astype(np.uint8), "LA"),
        "palette_transparent.png": palette,
        "plain.png": Image.fromarray(generator.integers(0, 256, (9, 7, 3)).astype(np.uint8)),
    }
    for name, image in cases.items():
        path = _save(image, tmp_path / name, "PNG")
        theirs = np.asarray(namespace["read"](path).convert("RGB").resize((8, 8), Image.Resampling.BILINEAR))
        assert np.array_equal(load_image(path, 8), theirs), name
        assert not np.array_equal(theirs, np.asarray(Image.open(path).convert("RGB").resize((8, 8), Image.Resampling.BILINEAR))) or name == "plain.png", name  # plain opening would differ


def test_an_iphone_photo_in_heic_is_read(tmp_path: Path) -> None:
    halves = np.zeros((40, 60, 3), dtype=np.uint8)
    halves[:, :30, 0] = 220  # left red, right blue
    halves[:, 30:, 2] = 220
    for index in range(6):  # three per class: enough to split
        path = _save(Image.fromarray(halves), tmp_path / "photos" / ("cat", "dog")[index % 2] / f"IMG_000{index}.{('HEIC', 'heic', 'heif')[index % 3]}", "HEIF")

    summary = scan_dataset(tmp_path / "photos").summary()
    assert summary["num_images"] == 6 and not summary["skipped"] and not summary["suspicious"]
    pixels = load_image(path, 20).astype(int)
    assert pixels[10, 3, 0] > 180 and pixels[10, 3, 2] < 40 and pixels[10, 16, 2] > 180 and pixels[10, 16, 0] < 40


def test_files_of_a_known_kind_pillow_cannot_read_say_what_to_do(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "scans" / "normal"
    folder.mkdir(parents=True)
    (folder / "a.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\1" * 64)
    (folder / "b").write_bytes(b"\0" * 128 + b"DICM" + b"\2" * 64)  # a DICOM file without an extension
    (folder / "c.heic").write_bytes(b"not really a photo")
    (tmp_path / "scans" / "tumour").mkdir()
    for index in range(3):
        Image.new("RGB", (8, 8)).save(folder / f"d{index}.png")
        Image.new("RGB", (8, 8), "white").save(tmp_path / "scans" / "tumour" / f"e{index}.png")
    monkeypatch.setattr(images, "READS_HEIF", False)  # as without pillow-heif

    reasons = {Path(item["path"]).name: item["reason"] for item in scan_dataset(tmp_path / "scans").summary()["skipped"]}
    assert "a DICOM scan: export it as PNG" in reasons["a.dcm"] and "a DICOM scan" in reasons["b"]
    assert "install pillow-heif" in reasons["c.heic"]
    monkeypatch.setattr(images, "READS_HEIF", True)  # read by pillow-heif, and still unreadable: damaged, not a missing reader
    reasons = {Path(item["path"]).name: item["reason"] for item in scan_dataset(tmp_path / "scans").summary()["skipped"]}
    assert "pillow-heif" not in reasons["c.heic"]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    picture = np.zeros((20, 40, 3), dtype=np.uint8)  # wide, left half white
    picture[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate it 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    Image.fromarray(picture).save(path, exif=exif.tobytes(), quality=95)
    upright = np.asarray(Image.open(path).transpose(Image.Transpose.ROTATE_270).resize((16, 16), Image.Resampling.BILINEAR))
    pixels = load_image(path, 16)
    assert np.abs(pixels.astype(int) - upright.astype(int)).mean() < 10
    assert pixels[0, :, 0].mean() > 200 and pixels[-1, :, 0].mean() < 50  # white ends up on top

    dataset_root = tmp_path / "data"
    for name in ("a", "b"):
        for index in range(3):
            target = dataset_root / name / f"{index}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    record = scan_dataset(dataset_root).records[0]
    assert (record.width, record.height) == (20, 40)


def test_a_bomb_header_is_refused_by_scan_and_by_load_image(tmp_path: Path) -> None:
    root = make_class_folders(tmp_path / "data", {"a": 3, "b": 3})
    bomb = root / "a" / "bomb.png"
    bomb.write_bytes(png_claiming_size(30000, 30000))
    dataset = scan_dataset(root)
    assert [(item.path, item.reason) for item in dataset.skipped] == [(str(bomb), bomb_reason(30000, 30000))]
    with pytest.raises(ImageTooLargeError, match=re.escape(f"'{bomb}': {bomb_reason(30000, 30000)}")):
        load_image(bomb, 32)


def test_the_pixel_limit_is_a_parameter_and_an_environment_variable(tmp_path: Path, monkeypatch) -> None:
    root = make_class_folders(tmp_path / "data", {"a": 3, "b": 3})
    big = root / "b" / "big.png"
    Image.new("RGB", (1200, 1000), (9, 99, 199)).save(big)
    expected = [(str(big), bomb_reason(1200, 1000, limit=1_000_000))]
    assert [(item.path, item.reason) for item in scan_dataset(root, max_pixels=1_000_000).skipped] == expected
    assert scan_dataset(root).skipped == []
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENVIRONMENT_VARIABLE, "1_000_000")  # read at call time, not at import
    assert [(item.path, item.reason) for item in scan_dataset(root).skipped] == expected
    with pytest.raises(ImageTooLargeError, match=re.escape(f"'{big}': {bomb_reason(1200, 1000, limit=1_000_000)}")):
        load_image(big, 32)
    assert load_image(big, 8, max_pixels=2_000_000).shape == (8, 8, 3)  # the parameter wins over the variable


def test_raising_the_limit_past_pillows_own_lets_the_header_through(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)  # restored after the test
    root = make_class_folders(tmp_path / "data", {"a": 3, "b": 3})
    (root / "a" / "bomb.png").write_bytes(png_claiming_size(30000, 30000))
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENVIRONMENT_VARIABLE, "1000000000")
    record = next(record for record in scan_dataset(root).records if record.path.endswith("bomb.png"))
    assert (record.width, record.height) == (30000, 30000)
    assert Image.MAX_IMAGE_PIXELS == 500_000_000  # raised to match, never lowered


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lots", "TL_CORE_MAX_IMAGE_PIXELS is 'lots' while it must be a whole number of pixels above 0. Set it to e.g. 300000000 (300 megapixels), or unset it for the default of 178956970."),
        ("-5", "TL_CORE_MAX_IMAGE_PIXELS is '-5' while it must be a whole number of pixels above 0. Set it to e.g. 300000000 (300 megapixels), or unset it for the default of 178956970."),
    ],
)
def test_a_bad_pixel_limit_is_named(tmp_path: Path, monkeypatch, value: str, message: str) -> None:
    root = make_class_folders(tmp_path / "data", {"a": 3, "b": 3})
    monkeypatch.setenv(MAX_IMAGE_PIXELS_ENVIRONMENT_VARIABLE, value)
    with pytest.raises(ConfigError, match=re.escape(message)):
        scan_dataset(root)
    monkeypatch.delenv(MAX_IMAGE_PIXELS_ENVIRONMENT_VARIABLE)
    with pytest.raises(ConfigError, match=re.escape("max_pixels is 0 while it must be a whole number of pixels above 0. Pass e.g. 300000000 (300 megapixels), or None for the default.")):
        scan_dataset(root, max_pixels=0)


def _photo_like(width: int, height: int) -> Image.Image:
    """Smooth gradients with some texture: a stand-in for a photo that JPEG compresses as it does photos."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    texture = np.random.default_rng(0).normal(0, 6, (height, width, 1))
    pixels = np.stack([128 + 100 * np.sin(x / 97), 128 + 100 * np.cos(y / 71), 128 + 60 * np.sin((x + y) / 53)], axis=-1) + texture
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def test_a_large_jpeg_is_reduced_while_decoding_and_keeps_a_margin(tmp_path: Path) -> None:
    from tl_core.data.images import DRAFT_MARGIN, reduce_while_decoding

    jpeg = _save(_photo_like(2000, 1500), tmp_path / "big.jpg", "JPEG", quality=90)
    png = _save(_photo_like(400, 300), tmp_path / "big.png", "PNG")
    # The decoder scales by 2, 4 or 8, and stops where the picture would get smaller than twice the model's size.
    for size, expected in ((224, (1000, 750)), (96, (500, 375)), (64, (250, 188)), (32, (250, 188)), (800, (2000, 1500))):
        with Image.open(jpeg) as image:
            reduce_while_decoding(image, size)
            assert image.size == expected, size
            assert min(image.size) >= min(DRAFT_MARGIN * size, 1500)
    with Image.open(png) as image:
        reduce_while_decoding(image, 32)
        assert image.size == (400, 300)  # other formats decode whole



def test_reduced_decoding_changes_real_photos_less_than_the_choice_of_resize_filter(ants_bees: Path) -> None:
    photos = sorted((ants_bees / "train" / "bees").glob("*.jpg"))[:20]
    for size in (32, 64):  # where these 500x375 photos are reduced while decoding
        reduced_difference, filter_difference = [], []
        for photo in photos:
            with Image.open(photo) as image:
                full = image.convert("RGB")
                bilinear = np.asarray(full.resize((size, size), Image.Resampling.BILINEAR), dtype=np.int16)
                lanczos = np.asarray(full.resize((size, size), Image.Resampling.LANCZOS), dtype=np.int16)
            reduced_difference.append(np.abs(load_image(photo, size).astype(np.int16) - bilinear).mean())
            filter_difference.append(np.abs(lanczos - bilinear).mean())
        assert np.mean(reduced_difference) < np.mean(filter_difference), size


def test_the_middle_of_an_image_is_its_frame_a_quarter_larger_cropped_to_the_size(tmp_path: Path) -> None:
    from tl_core.data.images import framed_size

    assert [framed_size(size) for size in (224, 64, 96, 160, 32)] == [280, 80, 120, 200, 40]
    # A grey picture in a black frame a twentieth of each side wide: the whole image shows the frame, its middle does not.
    pixels = np.zeros((300, 400, 3), dtype=np.uint8)
    pixels[15:285, 20:380] = 128
    path = _save(Image.fromarray(pixels), tmp_path / "framed.png", "PNG")
    whole, middle = load_image(path, 64), load_image(path, 64, centre_crop=True)
    assert whole.shape == middle.shape == (64, 64, 3)
    assert whole[0, 0].max() == 0 and whole[32, 32].min() == 128
    assert middle.min() == 128 and middle.max() == 128
    np.testing.assert_array_equal(middle, load_image(path, 80)[8:72, 8:72])  # what a model with a centre crop keeps of the image at its input
