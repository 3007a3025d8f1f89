"""Reading one image: its header (size, format, what looks wrong) and its pixels.

Every image is opened through ``open_image``, which refuses images with more
pixels than a limit (a guard against "decompression bombs": small files that
decode to gigabytes). The limit is ``DEFAULT_MAX_IMAGE_PIXELS`` unless the
caller passes ``max_pixels`` or the environment variable
``TL_CORE_MAX_IMAGE_PIXELS`` is set (read at every call, not at import).

Training, evaluation, prediction and previews all read pixels through
``load_image``, so they see identical inputs.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tl_core.errors import ConfigError, DataError


def _read_phone_photos() -> bool:
    """Teaches Pillow HEIC and HEIF (iPhones' photos) through ``pillow-heif``; False when it is not installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return False
    register_heif_opener()
    return True


READS_HEIF = _read_phone_photos()
# Files Pillow cannot read whose kind is known, with what to do (the scan lists them as skipped with this reason).
_UNREADABLE_KINDS = {
    ".heic": "an HEIC photo (iPhone): install pillow-heif (pip install pillow-heif) to read it, or export it as JPEG",
    ".heif": "an HEIF photo: install pillow-heif (pip install pillow-heif) to read it, or export it as JPEG",
    ".dcm": "a DICOM scan: export it as PNG (16-bit PNG keeps its grey levels), e.g. with pydicom, and use the PNG",
}

# EXIF orientations 5-8 rotate the picture by 90 degrees, so width and height swap.
_TRANSPOSING_ORIENTATIONS = frozenset({5, 6, 7, 8})
_EXIF_ORIENTATION_TAG = 0x0112
MAX_IMAGE_PIXELS_ENVIRONMENT_VARIABLE = "TL_CORE_MAX_IMAGE_PIXELS"
# Objects photographed in the middle of the frame (pets, plants, products) read better from the middle of the photo
# (feature extraction's probe: ants and bees +1.9 points, cat breeds +0.6); scenes and surfaces lose their edges
# (aerial scenes -1.1), so the advice measures it on each set (``load_image``'s ``centre_crop``).
CENTRE_SHARE = 0.8
DRAFT_MARGIN = 2  # a JPEG is decoded at no less than twice the model's input size (see reduce_while_decoding)
# Pillow's own refusal threshold at its default settings (twice Image.MAX_IMAGE_PIXELS):
# every image Pillow opened before still opens, and the ones it refused are now refused
# with a message that says how to raise the limit. A 179-megapixel RGB image takes
# about 540 MB of memory once decoded.
DEFAULT_MAX_IMAGE_PIXELS = 178_956_970
# Formats Pillow names differently from the extension they are saved under.
_FORMAT_FAMILIES = {"MPO": "JPEG", "DIB": "BMP"}
# What a complete file ends with; checked on the last bytes only.
_PNG_END = b"IEND\xaeB`\x82"
_JPEG_END = b"\xff\xd9"
_TAIL_BYTES = 64


class ImageTooLargeError(DataError):
    """An image has more pixels than the decompression-bomb limit allows.

    Attributes:
        reason: The message without the file name, as the skipped list shows it.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        super().__init__(f"'{path}': {reason}")
        self.reason = reason


@dataclass(frozen=True)
class ImageProbe:
    """The facts of one readable image, and a note when something about it looks wrong."""

    width: int
    height: int
    image_format: str
    mode: str
    file_size: int
    modified_ns: int
    note: str


def probe_image(path: Path, pixel_limit: int) -> ImageProbe | str:
    """Reads an image's header. Returns its facts, or the reason it cannot be used."""
    try:
        stat = path.stat()
    except OSError as error:
        return f"cannot be read: {error.strerror or error}"
    if stat.st_size == 0:
        return "empty file (0 bytes)"
    try:
        with open_image(path, pixel_limit) as image:
            mode = deep_colour_mode(image)  # before anything reads the pixels
            width, height = image.size
            if _header_orientation(image) in _TRANSPOSING_ORIENTATIONS:
                width, height = height, width
            image_format = image.format or "unknown"
    except ImageTooLargeError as error:
        return error.reason
    except Image.DecompressionBombError as error:
        return f"image too large to open safely ({error})"
    except Image.UnidentifiedImageError:
        kind = _unreadable_kind(path)
        return f"not an image Pillow can read: {kind}" if kind else "not an image Pillow can read (unknown or unsupported format)"
    except (OSError, SyntaxError, ValueError) as error:
        return f"not a readable image: {error}"
    notes = [note for note in (_extension_note(path, image_format), _truncation_note(path, image_format, stat.st_size)) if note]
    return ImageProbe(width, height, image_format, mode, stat.st_size, stat.st_mtime_ns, "; ".join(notes))


def _unreadable_kind(path: Path) -> str | None:
    """What an unreadable file probably is, and what to do, from its extension or a DICOM file's marker; None when unknown."""
    suffix = path.suffix.lower()
    # With pillow-heif installed an unreadable HEIC file is damaged, not waiting for a reader.
    kind = None if suffix in (".heic", ".heif") and READS_HEIF else _UNREADABLE_KINDS.get(suffix)
    if kind is None:
        try:
            with open(path, "rb") as stream:
                if stream.read(132)[128:] == b"DICM":  # DICOM's marker after a 128-byte preamble, whatever the name
                    kind = _UNREADABLE_KINDS[".dcm"]
        except OSError:
            pass
    return kind


def content_hash(path: str | os.PathLike) -> str:
    """BLAKE2b (128-bit) hash of a file's bytes, hex; empty when the file cannot be read."""
    try:
        with open(path, "rb") as stream:
            return hashlib.file_digest(stream, lambda: hashlib.blake2b(digest_size=16)).hexdigest()
    except OSError:
        return ""


def _header_orientation(image: Image.Image) -> int:
    """The EXIF orientation, read from the header only.

    Pillow decodes a whole PNG to look for EXIF data stored after the pixels;
    the scan does not (that would decode every PNG, bombs included). Such rare
    files are still turned upright by ``load_image``; only their recorded
    width and height stay as stored.
    """
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    return image.getexif().get(_EXIF_ORIENTATION_TAG, 1)


@functools.cache
def _extension_formats() -> dict[str, str]:
    """Lower-case extension -> Pillow format, for every format this Pillow can read."""
    return {extension.lower(): name for extension, name in Image.registered_extensions().items()}


def _extension_note(path: Path, image_format: str) -> str:
    """Says when a file's name does not tell its format; the content decides either way."""
    suffix = path.suffix
    if not suffix:
        return f"no file extension; read as {image_format} by its content (tools that go by the extension skip it)"
    named = _extension_formats().get(suffix.lower())
    if named is None:
        return f"extension '{suffix}' is not an image extension; read as {image_format} by its content (tools that go by the extension skip it)"
    if _FORMAT_FAMILIES.get(named, named) != _FORMAT_FAMILIES.get(image_format, image_format):
        return f"named {suffix} but the content is {image_format}; read as {image_format} (tools that trust the extension may fail on it)"
    return ""


def _truncation_note(path: Path, image_format: str, file_size: int) -> str:
    """Says when a JPEG or PNG does not end the way a complete file does (cheap: reads the last bytes)."""
    family = _FORMAT_FAMILIES.get(image_format, image_format)
    if family not in ("JPEG", "PNG"):
        return ""
    try:
        with open(path, "rb") as stream:
            stream.seek(max(0, file_size - _TAIL_BYTES))
            tail = stream.read(_TAIL_BYTES)
    except OSError:
        return ""
    complete = tail.rstrip(b"\x00\r\n\t ").endswith(_JPEG_END) if family == "JPEG" else _PNG_END in tail
    if complete:
        return ""
    return f"the {family} data stops before its end marker, so the file looks truncated; it is kept for now and dropped with a notice if it fails to decode when training starts"


def max_image_pixels(limit: int | None = None) -> int:
    """The pixel limit in force: ``limit`` when given, else ``$TL_CORE_MAX_IMAGE_PIXELS``, else the default.

    The environment variable is read at every call, so it can be changed
    without reimporting anything.

    Args:
        limit: An explicit limit (pixels, width times height), or None.

    Returns:
        The largest number of pixels an image may have.

    Raises:
        ConfigError: When the limit is not a whole number above 0.
    """
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"max_pixels is {limit!r} while it must be a whole number of pixels above 0. Pass e.g. 300000000 (300 megapixels), or None for the default.")
        return limit
    raw = os.environ.get(MAX_IMAGE_PIXELS_ENVIRONMENT_VARIABLE, "").strip()
    if not raw:
        return DEFAULT_MAX_IMAGE_PIXELS
    try:
        value = int(raw.replace("_", "").replace(",", ""))
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(
            f"{MAX_IMAGE_PIXELS_ENVIRONMENT_VARIABLE} is '{raw}' while it must be a whole number of pixels above 0. "
            f"Set it to e.g. 300000000 (300 megapixels), or unset it for the default of {DEFAULT_MAX_IMAGE_PIXELS}."
        )
    return value


def open_image(path: str | os.PathLike, max_pixels: int | None = None) -> Image.Image:
    """Opens an image lazily (header only), refusing one with more pixels than the limit.

    Args:
        path: The image file; its format is found from its content.
        max_pixels: The pixel limit; None for ``max_image_pixels()``.

    Returns:
        The opened image; close it (or use it in a ``with`` block).

    Raises:
        ImageTooLargeError: When width times height is over the limit.
        OSError, ValueError, SyntaxError: When the file is not a readable image.
    """
    limit = max_image_pixels(max_pixels)
    _let_pillow_open(limit)
    try:
        image = Image.open(path)
    except Image.DecompressionBombError as error:
        size = _declared_size(path)
        pixels = size[0] * size[1] if size else _pixels_in_pillow_message(str(error))
        if not pixels or pixels <= limit:
            raise  # refused by a Pillow limit someone else set lower; its own message stands
        raise ImageTooLargeError(path, _too_large_reason(size, pixels, limit)) from error
    width, height = image.size
    if width * height > limit:
        image.close()
        raise ImageTooLargeError(path, _too_large_reason((width, height), width * height, limit))
    return image


def _let_pillow_open(limit: int) -> None:
    """Raises Pillow's process-wide limit (never lowers it) so Pillow does not refuse what ``limit`` allows.

    Pillow refuses images over twice ``Image.MAX_IMAGE_PIXELS``. That only
    changes when a caller asks for a limit above Pillow's own.
    """
    current = Image.MAX_IMAGE_PIXELS
    if current is not None and 2 * current < limit:
        Image.MAX_IMAGE_PIXELS = -(-limit // 2)


def _declared_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """Width and height from the file's header, read without Pillow's size check (only to word a refusal)."""
    try:
        with open(path, "rb") as stream:
            prefix = stream.read(16)
            for name in Image.ID:
                factory, accept = Image.OPEN[name]
                verdict = accept(prefix) if accept is not None else True
                if not verdict or isinstance(verdict, str):
                    continue
                stream.seek(0)
                try:
                    return tuple(factory(stream, os.fspath(path)).size)
                except Exception:  # noqa: BLE001 - another plugin may read it; None when none does
                    continue
    except OSError:
        return None
    return None


def _pixels_in_pillow_message(message: str) -> int:
    found = re.search(r"\((\d+) pixels\)", message)
    return int(found.group(1)) if found else 0


def _too_large_reason(size: tuple[int, int] | None, pixels: int, limit: int) -> str:
    found = f"image is {size[0]}×{size[1]} pixels ({pixels / 1e6:,.1f} megapixels)" if size else f"image has {pixels / 1e6:,.1f} megapixels"
    return (
        f"{found}, over the limit of {limit / 1e6:,.1f} megapixels that guards against decompression bombs; "
        f"resize it, or raise the limit with scan_dataset(max_pixels={pixels}) or the environment variable {MAX_IMAGE_PIXELS_ENVIRONMENT_VARIABLE}={pixels}"
    )


def framed_size(size: int) -> int:
    """The side an image is resized to before its middle ``size`` pixels are kept (``load_image``'s ``centre_crop``).

    The middle is about ``CENTRE_SHARE`` of each side, with as many pixels cut on either side: 280 for 224, 80 for 64.
    """
    return size + 2 * round(size * (1 / CENTRE_SHARE - 1) / 2)


def load_image(path: str | os.PathLike, size: int, max_pixels: int | None = None, centre_crop: bool = False) -> np.ndarray:
    """Reads an image as an RGB uint8 array of shape (size, size, 3).

    The picture is turned upright by its EXIF orientation, converted to RGB
    (transparent areas become white, 16-bit values are scaled to 8 bits) and
    resized to a square with bilinear filtering (the aspect ratio is not kept,
    so nothing is cropped away). Training, evaluation and prediction all read
    pixels through this one function, so they see identical inputs.

    With ``centre_crop`` the square is ``framed_size(size)`` on a side and its middle
    ``size`` pixels are kept: the same pixels a saved model with a centre crop
    (``tl_core.models.build.with_centre_crop``) uses of an image resized to its input.

    Args:
        path: The image file; its format is found from its content, not its name.
        size: Side of the square output in pixels.
        max_pixels: The pixel limit (see ``open_image``); None for ``max_image_pixels()``.
        centre_crop: Keep the middle of the picture (``CENTRE_SHARE`` of each side) rather than all of it.

    Returns:
        The pixels, ``uint8``, shape ``(size, size, 3)``.

    Raises:
        ImageTooLargeError: When the image has more pixels than the limit.
        OSError, ValueError: When the file cannot be decoded.
    """
    with open_image(path, max_pixels) as image:
        reduce_while_decoding(image, framed_size(size) if centre_crop else size)
        image = deep_colour(image) or image
        ImageOps.exif_transpose(image, in_place=True)  # in place: no copy of an upright picture
        rgb = to_rgb(image)
        if not centre_crop:
            return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
        outer = framed_size(size)
        margin = (outer - size) // 2
        return np.asarray(rgb.resize((outer, outer), Image.Resampling.BILINEAR), dtype=np.uint8)[margin : margin + size, margin : margin + size]


def reduce_while_decoding(image: Image.Image, size: int) -> None:
    """Lets a JPEG's decoder scale the picture down by 2, 4 or 8 while it decodes, keeping it at least ``DRAFT_MARGIN`` x ``size`` on each side.

    A phone's 4032x3024 photo decodes about 6x faster for a 224 px model. The
    margin keeps the final resize doing the smoothing: measured on cats_dogs,
    the pixels differ from a full decode by less than bilinear filtering differs
    from Lanczos filtering on the same picture (with no margin, at 64 px, by more).
    Other formats are decoded whole.
    """
    if image.format == "JPEG":
        image.draft("RGB", (DRAFT_MARGIN * size, DRAFT_MARGIN * size))


# Modes with an alpha channel, which ``to_rgb`` lays over white; with the palette images (transparent only where they
# name a transparent colour) and 16-bit RGBA, the modes whose images may be transparent.
ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
MAY_BE_TRANSPARENT = ALPHA_MODES | {"P", "RGBA;16"}
# One value per pixel with more than 8 bits: 16-bit greyscale (PNG, TIFF), 32-bit integers, 32-bit floats.
DEEP_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
# 16 bits per colour channel (PNG, TIFF): Pillow opens them as "RGB" or "RGBA" and keeps the top 8 bits;
# ``probe_image`` names them so, and ``deep_colour`` reads all 16.
DEEP_COLOUR_MODES = frozenset({"RGB;16", "RGBA;16"})
MORE_THAN_EIGHT_BITS = DEEP_MODES | DEEP_COLOUR_MODES
# The decoders of 16-bit colour that ``deep_colour`` runs again with the other byte order: PNG's, TIFF's plain strips,
# and libtiff (compressed TIFF), which hands over values in this machine's byte order (``16N``).
_SIXTEEN_BIT_CODECS = frozenset({"zip", "raw", "libtiff"})
_OTHER_BYTE = {"16B": "16L", "16L": "16B", "16N": "16B" if sys.byteorder == "little" else "16L"}


def _sixteen_bit_colour_rawmode(image: Image.Image) -> str | None:
    """The raw mode of an unread 16-bit-per-channel colour image (``RGB;16B``, ``RGBA;16L``...), None for any other."""
    if image.mode not in ("RGB", "RGBA") or not getattr(image, "tile", None):
        return None
    codec, args = image.tile[0][0], image.tile[0][3]
    rawmode = args[0] if isinstance(args, tuple) else args
    if codec not in _SIXTEEN_BIT_CODECS or not isinstance(rawmode, str) or rawmode[-3:] not in _OTHER_BYTE:
        return None
    # Three colours (and transparency, or a padding channel); not 16-bit grey with transparency (LA;16B), which Pillow can only read at 8 bits.
    return rawmode if rawmode[:-3] in ("RGB;", "RGBA;", "RGBX;") else None


def _with_other_byte(tile):
    """A decoder tile whose 16-bit raw mode reads the other byte of each value (the low one, where Pillow keeps the high one)."""
    args = tile[3]
    rawmode = args[0] if isinstance(args, tuple) else args
    swapped = rawmode[:-3] + _OTHER_BYTE[rawmode[-3:]]
    args = (swapped, *args[1:]) if isinstance(args, tuple) else swapped
    return tile._replace(args=args) if hasattr(tile, "_replace") else (tile[0], tile[1], tile[2], args)  # Pillow 11 and later name the fields


def deep_colour(image: Image.Image) -> Image.Image | None:
    """A 16-bit-per-channel colour image, not yet read, as 8-bit RGB(A) with its colours stretched like ``eight_bit_values``; None for any other image.

    Pillow reads such a file as 8-bit, keeping the high byte of each value: a camera's 12 bits in a 16-bit file
    then keep 16 levels of 256 and look black. The file is decoded twice, the second time with the other byte
    order, which gives the low bytes; the three colours are stretched together (their balance kept) to the
    brightest value, and transparency keeps its high byte. Where the second decode is not possible (a file
    object rather than a path, or a decoder without that raw mode), None: the image is read as Pillow reads it.
    """
    if _sixteen_bit_colour_rawmode(image) is None or not getattr(image, "filename", None):
        return None
    try:
        with Image.open(image.filename) as other:
            other.tile = [_with_other_byte(tile) for tile in other.tile]
            low = np.asarray(other)
    except (OSError, ValueError, SyntaxError, IndexError, TypeError, AttributeError):
        return None
    high = np.asarray(image)
    if low.shape != high.shape:
        return None
    colours = eight_bit_values((high[..., :3].astype(np.uint16) << 8) | low[..., :3])
    picture = Image.fromarray(np.dstack([colours, high[..., 3]]), "RGBA") if high.shape[-1] == 4 else Image.fromarray(colours, "RGB")
    picture.info = dict(image.info)  # its EXIF orientation, where the file has one
    return picture


def deep_colour_mode(image: Image.Image) -> str:
    """``image.mode``, or ``RGB;16`` / ``RGBA;16`` for an unread image with 16 bits per colour channel (``DEEP_COLOUR_MODES``)."""
    return f"{image.mode};16" if _sixteen_bit_colour_rawmode(image) else image.mode


def eight_bit_values(values: np.ndarray) -> np.ndarray:
    """A greyscale image of more than 8 bits as 0-255: stretched from 0 (or its lowest value, when negative) to its brightest pixel.

    Microscope and medical cameras mostly record 10 to 14 bits and save them in 16-bit files. Divided by
    65,535, a 12-bit image would keep 16 grey levels out of 256 and look nearly black. So each image is
    stretched to its own brightest pixel (Pillow before version 10 read 16-bit files as 32-bit integers,
    which were stretched this way already). Integer images whose values all fit in 0-255 are kept as they
    are. Missing values (NaN) count as 0. Prediction reads images through the same rule; outside this
    package, scale a deep image the same way before giving it to the model (the Export page shows how).
    Values of 16 bits or fewer go through a table of the same rule: for a 12-megapixel colour image 0.1 s
    instead of 2.3 s, and no array of floats eight times its size.
    """
    array = np.asarray(values)
    if array.dtype.kind == "u" and array.dtype.itemsize <= 2 and array.size:  # 16-bit files: one table of at most 65,536 entries
        top = max(int(array.max()), 255)  # the brightest pixel, or 255 where the values fit in 8 bits
        return np.clip(np.round(np.arange(top + 1, dtype=np.float64) / top * 255.0), 0, 255).astype(np.uint8)[array]
    integers = array.dtype.kind in "iub"
    values = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if values.size == 0:
        return np.zeros(values.shape, dtype=np.uint8)
    low, high = min(0.0, float(values.min())), float(values.max())
    if integers and low == 0.0 and high <= 255.0:
        high = 255.0
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.clip(np.round((values - low) / (high - low) * 255.0), 0, 255).astype(np.uint8)


# ``to_rgb``'s transparency, the end of both readers below (its modes written out from ``ALPHA_MODES``).
_OVER_WHITE = f"""    if image.mode in {tuple(sorted(ALPHA_MODES))!r} or (image.mode == "P" and "transparency" in image.info):  # transparency laid over white
        picture = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", picture.size, (255, 255, 255, 255)), picture)
    return image
"""

# ``eight_bit_values``, ``deep_colour`` and ``to_rgb``'s transparency for a user's own code, with Pillow and NumPy only
# (shown on the Export page where the run's images were deep; tested to agree). Its greyscale modes are written out from ``DEEP_MODES``.
STANDALONE_READER = """def stretched(values, integers):  # to 0-255, from 0 (or the lowest value) to the brightest; 8-bit values kept
    values = np.nan_to_num(np.asarray(values, dtype="float64"), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = min(0.0, values.min()), values.max()
    if integers and low == 0 and high <= 255:
        high = 255.0
    scaled = (values - low) / (high - low) * 255 if high > low else values * 0
    return np.clip(np.round(scaled), 0, 255).astype("uint8")


def with_raw_mode(tile, rawmode):  # a decoder tile that unpacks its bytes as another raw mode
    args = (rawmode, *tile[3][1:]) if isinstance(tile[3], tuple) else rawmode
    return tile._replace(args=args) if hasattr(tile, "_replace") else (*tile[:3], args)


def read(path):  # an image as the model was trained on it: more than 8 bits stretched to 0-255, transparency over white
    image = Image.open(path)
    if image.mode in DEEP_MODES:  # 16- and 32-bit greyscale
        return Image.fromarray(stretched(np.asarray(image), image.mode != "F"))
    tile = image.tile[0] if image.mode in ("RGB", "RGBA") and image.tile else None
    raw = tile and (tile[3][0] if isinstance(tile[3], tuple) else tile[3])
    if tile and tile[0] in ("zip", "raw", "libtiff") and str(raw)[:-3] in ("RGB;", "RGBA;", "RGBX;") and raw[-3:] in ("16B", "16L", "16N"):  # 16 bits per colour: Pillow keeps the high byte
        import sys  # libtiff's values come in this machine's byte order (16N)

        order = {"16N": "16L" if sys.byteorder == "little" else "16B"}.get(raw[-3:], raw[-3:])
        other = Image.open(path)  # decoded again with the other byte order: the low bytes
        other.tile = [with_raw_mode(t, raw[:-3] + ("16L" if order == "16B" else "16B")) for t in other.tile]
        high = np.asarray(image)
        colours = stretched(high[..., :3].astype("uint16") << 8 | np.asarray(other)[..., :3], True)
        if image.mode == "RGB":
            return Image.fromarray(colours)
        image = Image.fromarray(np.dstack([colours, high[..., 3]]), "RGBA")
""".replace("DEEP_MODES", repr(tuple(sorted(DEEP_MODES)))) + _OVER_WHITE

# The same for images that are only transparent (8 bits per channel): the snippet then holds what they need.
OVER_WHITE_READER = """def read(path):  # an image as the model was trained on it: transparency laid over white
    image = Image.open(path)
""" + _OVER_WHITE


def to_rgb(image: Image.Image) -> Image.Image:
    """Converts any Pillow mode to RGB; transparency is laid over white, and more than 8 bits per pixel are stretched (``eight_bit_values``)."""
    if image.mode == "RGB":
        return image
    if image.mode in DEEP_MODES:
        return Image.fromarray(eight_bit_values(np.asarray(image))).convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
