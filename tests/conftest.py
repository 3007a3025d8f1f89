"""Shared fixtures.

Before Keras is imported, ``KERAS_HOME`` points at a temporary folder holding
copies of the real ImageNet weights from ``../shared/weights``, so the real
``weights="imagenet"`` code path runs without any network. Caches go to a
temporary folder too, never to the user's home.
"""

from __future__ import annotations

import atexit
import io
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tl_core.data.images import DEFAULT_MAX_IMAGE_PIXELS

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TL_SHARED_DIR", REPO.parent / "shared"))
WEIGHTS = SHARED / "weights"
ANTS_BEES = SHARED / "datasets" / "ants_bees"
MOBILENET_V2_WEIGHTS = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"

_session_folder = Path(tempfile.mkdtemp(prefix="tl_core_tests_"))
atexit.register(shutil.rmtree, _session_folder, ignore_errors=True)
os.environ["KERAS_HOME"] = str(_session_folder / "keras_home")
os.environ["TL_CORE_CACHE_DIR"] = str(_session_folder / "cache")
os.environ["TL_CORE_RUNS_DIR"] = str(_session_folder / "runs")
os.environ["TL_CORE_BROWSE_ROOT"] = str(_session_folder)  # the Data page's folder browser never lists the real home
os.environ.pop("TL_APP_PASSWORD", None)  # the app under test is the local one unless a test shares it
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Converting to TFLite and ONNX takes seconds per run whatever the image size; the tests of those files
# (test_portable.py, the browser test) ask for them, every other training test skips them.
os.environ["TL_CORE_EXPORT_FORMATS"] = "none"
(_session_folder / "keras_home" / "models").mkdir(parents=True)
for weights_file in WEIGHTS.glob("*.h5"):
    shutil.copy(weights_file, _session_folder / "keras_home" / "models" / weights_file.name)


@pytest.fixture
def imagenet_weights() -> Path:
    """The offline MobileNetV2 weights, or a skip that says they are missing."""
    path = WEIGHTS / MOBILENET_V2_WEIGHTS
    if not path.exists():
        pytest.skip(f"skipped: real ImageNet weights not found at {path} (../shared/weights is absent)")
    return path


@pytest.fixture
def ants_bees() -> Path:
    if not ANTS_BEES.is_dir():
        pytest.skip(f"skipped: the real dataset {ANTS_BEES} is absent")
    return ANTS_BEES


def write_image(path: Path, array: np.ndarray, image_format: str | None = None, **save_options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=image_format, **save_options)
    return path


def pattern_image(class_index: int, index: int, size: int = 48) -> np.ndarray:
    """A small picture whose class is easy to learn: the class decides colour and stripe direction."""
    rng = np.random.default_rng(1000 * class_index + index)
    base = np.zeros((size, size, 3), dtype=np.float64)
    base[..., class_index % 3] = 200
    coordinates = np.arange(size)
    stripes = ((coordinates // 4) % 2 == 0).astype(np.float64) * 55
    base += stripes[None, :, None] if class_index % 2 == 0 else stripes[:, None, None]
    base += rng.normal(0, 12, base.shape)
    return np.clip(base, 0, 255).astype(np.uint8)


def make_class_folders(root: Path, classes: dict[str, int], size: int = 48, image_format: str = "PNG", extension: str = ".png") -> Path:
    for class_index, (name, count) in enumerate(classes.items()):
        for index in range(count):
            write_image(root / name / f"{name}_{index:03d}{extension}", pattern_image(class_index, index, size), image_format)
    return root


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """Three classes of 10 generated 48 px images, no split folders."""
    return make_class_folders(tmp_path / "tiny", {"circles": 10, "squares": 10, "stripes": 10})


CLASSES = {"red": 16, "green": 16, "blue": 16}
FLIPS = {"red/red_003.png": "green", "green/green_007.png": "blue", "blue/blue_011.png": "red"}


def planted(root: Path, flips: dict[str, str]) -> Path:
    """Generated classes with some images moved into the wrong class folder (``{"red/red_003.png": "green"}``)."""
    make_class_folders(root, CLASSES)
    for relative, wrong in flips.items():
        source = root / relative
        source.rename(root / wrong / source.name)
    return root


def bomb_reason(width: int, height: int, limit: int = DEFAULT_MAX_IMAGE_PIXELS) -> str:
    pixels = width * height
    return (
        f"image is {width}×{height} pixels ({pixels / 1e6:,.1f} megapixels), over the limit of {limit / 1e6:,.1f} megapixels "
        f"that guards against decompression bombs; resize it, or raise the limit with scan_dataset(max_pixels={pixels}) "
        f"or the environment variable TL_CORE_MAX_IMAGE_PIXELS={pixels}"
    )


def png_claiming_size(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose header claims another size (CRC recomputed): a decompression bomb's header, in 70 bytes."""
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def _paeth(left: np.ndarray, up: np.ndarray, upper_left: np.ndarray) -> np.ndarray:
    estimate = left + up - upper_left
    near_left, near_up, near_corner = np.abs(estimate - left), np.abs(estimate - up), np.abs(estimate - upper_left)
    return np.where((near_left <= near_up) & (near_left <= near_corner), left, np.where(near_up <= near_corner, up, upper_left))


def sixteen_bit_colour_png(path: Path, values: np.ndarray) -> Path:
    """``values`` (height, width, 2, 3 or 4; 0-65535) as a 16-bit-per-channel PNG (grey and alpha, RGB, RGBA), written by hand (Pillow cannot).

    The rows take PNG's five filters in turn (none, sub, up, average, Paeth), so a reader must undo each of them.
    """
    height, width, channels = values.shape
    step = 2 * channels  # bytes per pixel
    rows = np.asarray(values, dtype=">u2").reshape(height, width * channels).view(np.uint8).astype(np.int32).reshape(height, -1)
    previous = np.zeros(rows.shape[1], dtype=np.int32)
    stream = bytearray()
    for index, row in enumerate(rows):
        left = np.concatenate([np.zeros(step, dtype=np.int32), row[:-step]])
        corner = np.concatenate([np.zeros(step, dtype=np.int32), previous[:-step]])
        kind = index % 5
        guess = [0 * row, left, previous, (left + previous) // 2, _paeth(left, previous, corner)][kind]
        stream += bytes([kind]) + ((row - guess) % 256).astype(np.uint8).tobytes()
        previous = row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, {2: 4, 3: 2, 4: 6}[channels], 0, 0, 0)  # grey and alpha, RGB, RGBA
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(stream))) + chunk(b"IEND", b""))
    return path


def sixteen_bit_colour_tiff(path: Path, values: np.ndarray, order: str = "<", compressed: bool = False) -> Path:
    """``values`` (height, width, 3; 0-65535) as a 16-bit RGB TIFF in byte ``order`` (``<`` or ``>``), written by hand.

    ``compressed``: Deflate-compressed, which Pillow reads through libtiff (plain strips it reads itself).
    """
    height, width, _ = values.shape
    pixels = np.asarray(values, dtype=f"{order}u2").tobytes()
    pixels = zlib.compress(pixels) if compressed else pixels
    entries = [  # tag, type (3 short, 4 long), count, value or offset
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, 3, 8 + 2 + 10 * 12 + 4), (259, 3, 1, 8 if compressed else 1), (262, 3, 1, 2),
        (273, 4, 1, 8 + 2 + 10 * 12 + 4 + 6), (277, 3, 1, 3), (278, 4, 1, height), (279, 4, 1, len(pixels)), (284, 3, 1, 1),
    ]
    data = (b"II" if order == "<" else b"MM") + struct.pack(f"{order}HI", 42, 8) + struct.pack(f"{order}H", len(entries))
    for tag, kind, count, value in entries:
        data += struct.pack(f"{order}HHI", tag, kind, count) + (struct.pack(f"{order}HH", value, 0) if kind == 3 and count == 1 else struct.pack(f"{order}I", value))
    data += struct.pack(f"{order}I", 0) + struct.pack(f"{order}HHH", 16, 16, 16) + pixels
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Keeps each phase's report on the test item, so a fixture's teardown can tell whether the test failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


# --------------------------------------------------------------------------- a real server (the tests marked slow)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_app_server(tmp_path: Path, log, **environment: str) -> tuple[subprocess.Popen, str]:
    """``streamlit run app.py`` on a free loopback port, its session folders under ``tmp_path``; returns it and its URL once it answers."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-X", "faulthandler", "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=REPO, env={**os.environ, "TMPDIR": str(tmp_path), **environment}, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    # A fresh opener without proxies: urllib caches the proxies of the first request in the process,
    # and another test may have pointed them at a closed port.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.time() + 120
    while True:
        try:
            with opener.open(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return server, url
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                raise AssertionError("streamlit did not start:\n" + Path(log.name).read_text()[-3000:]) from None
            time.sleep(0.5)
