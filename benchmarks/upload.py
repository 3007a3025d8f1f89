"""Benchmark: a folder of photos through the app's upload routes in a real browser.

``python -m benchmarks.upload`` generates photos with Pillow into a
temporary folder (every file a different picture), starts ``streamlit run
app.py`` and drives Debian's chromium with Playwright the way a user goes:

1. **Folder route**: the folder is handed to the Data page's folder input; the
   clock runs from choosing the folder until the summary ("N images in K
   classes") is on screen, so it includes sending, writing and scanning.
2. **Zip route**, the floor to beat: the same files as one stored .zip through
   the .zip uploader and its "Unpack and use" button, until the same summary.
3. **Many small files** (``--small N``, 20,000 by default): only the folder
   route, printing how long the page's main thread was ever blocked while
   the upload ran (a probe every 200 ms) and the server's peak memory
   (VmHWM of the Streamlit process).

It prints files/s and MB/s for each and the ratio of the two routes. Needs
``playwright`` (requirements-dev.txt) and ``/usr/bin/chromium``. Nothing
here is a test: the figures go into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGUMENTS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def make_photos(folder: Path, count: int, classes: int, width: int, height: int, seed: int = 0) -> tuple[int, int]:
    """``count`` distinct JPEGs in ``classes`` class folders; returns (files, bytes)."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    total = 0
    for index in range(count):
        label = index % classes
        tint = rng.uniform(0, 255, 3).astype(np.float32)
        angle = rng.uniform(0, np.pi)
        ramp = (np.cos(angle) * columns / width + np.sin(angle) * rows / height)[..., None] * 180
        picture = np.clip(0.5 * tint + ramp + rng.normal(0, 26, (height, width, 3)), 0, 255).astype(np.uint8)
        target = folder / f"class_{label:02d}" / f"photo_{index:06d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(target, "JPEG", quality=85)
        total += target.stat().st_size
    return count, total


def stored_zip(folder: Path, archive: Path) -> None:
    """The folder as a .zip without compression (JPEGs do not shrink; this is how users zip photos fastest)."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as packed:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                packed.write(path, path.relative_to(folder.parent))


class AppServer:
    """``streamlit run app.py`` on a free port, with its own TMPDIR."""

    def __init__(self, temporary: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(temporary / "streamlit.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(self.port), "--server.address", "127.0.0.1", "--server.headless", "true"],
            cwd=REPO, env={**os.environ, "TMPDIR": str(temporary)}, stdout=self.log, stderr=subprocess.STDOUT,
        )
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        deadline = time.time() + 120
        while True:
            try:
                with opener.open(f"{self.url}/_stcore/health", timeout=2):
                    return
            except OSError:
                if time.time() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"streamlit did not start; see {temporary / 'streamlit.log'}") from None
                time.sleep(0.5)

    def peak_memory_mb(self) -> float:
        """The server process's peak resident memory (VmHWM), in MiB (2^20 bytes)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def _summary_text(files: int, classes: int) -> str:
    return f"{files:,} images in {classes} classes"


def time_folder_route(page, url: str, folder: Path, files: int, classes: int, probe_responsiveness: bool = False) -> tuple[float, float, str]:
    """Seconds from choosing the folder to the summary, the longest main-thread stall seen (ms), and the uploader's own note."""
    page.goto(url)
    page.get_by_text("Upload a folder").click()
    chooser = page.locator('[data-testid="tl-folder-input"]')
    chooser.wait_for(state="attached", timeout=120_000)
    summary = page.get_by_text(_summary_text(files, classes))
    started = time.perf_counter()
    chooser.set_input_files(str(folder))
    longest_stall = 0.0
    if probe_responsiveness:
        while not summary.is_visible():
            before = time.perf_counter()
            page.evaluate("() => new Promise((done) => setTimeout(done, 0))")  # waits for the page's main thread
            longest_stall = max(longest_stall, (time.perf_counter() - before) * 1000)
            page.wait_for_timeout(200)
    summary.wait_for(timeout=900_000)
    seconds = time.perf_counter() - started
    return seconds, longest_stall, page.locator('[data-testid="tl-folder-message"]').inner_text().strip()


def time_zip_route(page, url: str, archive: Path, files: int, classes: int) -> float:
    """Seconds from choosing the .zip to the summary (upload, the button press, unpacking, scanning)."""
    page.goto(url)
    page.get_by_text("Upload a .zip").click()
    chooser = page.locator('[data-testid="stFileUploader"] input[type="file"]')
    chooser.wait_for(state="attached", timeout=120_000)
    started = time.perf_counter()
    chooser.set_input_files(str(archive))
    page.get_by_role("button", name="Unpack and use").click(timeout=900_000)
    page.get_by_text(_summary_text(files, classes)).wait_for(timeout=900_000)
    return time.perf_counter() - started


def _rate(files: int, size: int, seconds: float) -> str:
    return f"{seconds:6.1f} s  {files / seconds:7.0f} files/s  {size / 1e6 / seconds:6.1f} MB/s"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=5000, help="photos for the folder-versus-zip comparison (default 5,000)")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--small", type=int, default=20000, help="64 px files for the responsiveness and memory run (0 to skip)")
    parser.add_argument("--skip-zip", action="store_true", help="time the folder route only")
    arguments = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    temporary = Path(tempfile.mkdtemp(prefix="tl_core_bench_upload_"))
    try:
        photos = temporary / "photos"
        files, size = make_photos(photos, arguments.photos, arguments.classes, 320, 240)
        print(f"{files:,} JPEGs, {size / 1e6:.0f} MB, {arguments.classes} class folders (320x240)")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGUMENTS)
            server = AppServer(temporary)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1400})
                folder_seconds, _, note = time_folder_route(page, server.url, photos, files, arguments.classes)
                print(f"folder route   {_rate(files, size, folder_seconds)}   (the uploader: {note!r}; the rest is writing the summary)")
                if not arguments.skip_zip:
                    archive = temporary / "photos.zip"
                    stored_zip(photos, archive)
                    zip_seconds = time_zip_route(browser.new_page(viewport={"width": 1400, "height": 1400}), server.url, archive, files, arguments.classes)
                    print(f"zip route      {_rate(files, size, zip_seconds)}")
                    print(f"folder route / zip route: {folder_seconds / zip_seconds:.2f}x the time (target: at most 2x; and at most 60 s for 5,000 photos)")
                print(f"server peak memory so far: {server.peak_memory_mb():.0f} MiB")
            finally:
                server.stop()
            shutil.rmtree(photos, ignore_errors=True)
            if arguments.small:
                small = temporary / "small"
                small_files, small_size = make_photos(small, arguments.small, arguments.classes, 64, 64, seed=1)
                server = AppServer(temporary)
                try:
                    page = browser.new_page(viewport={"width": 1400, "height": 1400})
                    seconds, stall, note = time_folder_route(page, server.url, small, small_files, arguments.classes, probe_responsiveness=True)
                    print(f"{small_files:,} small files ({small_size / 1e6:.0f} MB): folder route {_rate(small_files, small_size, seconds)}   (the uploader: {note!r})")
                    print(f"  longest main-thread stall during the upload: {stall:.0f} ms; server peak memory {server.peak_memory_mb():.0f} MiB")
                finally:
                    server.stop()
            browser.close()
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


if __name__ == "__main__":
    main()
