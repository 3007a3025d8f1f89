"""The whole path in a real browser: `streamlit run app.py`, Debian's chromium driven by Playwright.

Upload ../shared/datasets/ants_bees as a folder, read the summary, accept the
scenario, pick feature extraction at a small image size with its recipe, train
and watch the chart, see the confusion matrix, download model.h5 and model.onnx
and load them with plain Keras and ONNX Runtime in a separate Python. A screenshot of every page is saved in
a temporary folder (printed at the end; set TL_E2E_SHOTS to keep them elsewhere).

Once more in sharing mode (``TL_APP_PASSWORD``): sign in, upload, train a tiny
run; a browser without the password gets nothing but the sign-in page; the
server stopped the way a service manager stops it (SIGTERM) leaves no session
folder behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import start_app_server

pytestmark = pytest.mark.slow  # trains real networks, or runs a benchmark or the browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
playwright_api = pytest.importorskip("playwright.sync_api", reason="skipped: Playwright's Python package is not installed (.ci/run installs it)")
if not Path(CHROMIUM).exists():
    pytest.skip("skipped: Debian's chromium is not installed (.ci/run installs it with apt-get)", allow_module_level=True)

CHROMIUM_ARGUMENTS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture
def app_url(tmp_path: Path, request: pytest.FixtureRequest):
    log = open(tmp_path / "streamlit.log", "w")  # noqa: SIM115 - closed in the finally below
    server = None
    try:
        # The user's default: a run writes the model, and the Export page makes model.tflite and model.onnx on request.
        server, url = start_app_server(tmp_path, log, TL_CORE_EXPORT_FORMATS="")
        yield url
        report = getattr(request.node, "report_call", None)
        if report is not None and report.failed and server.poll() is None:
            # Python started with -X faulthandler prints every thread's stack on SIGABRT: a hang shows where.
            server.send_signal(signal.SIGABRT)
            server.wait(20)
            log.flush()
            print("streamlit server log with every thread's stack:\n" + (tmp_path / "streamlit.log").read_text()[-20000:])
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        log.close()


@pytest.fixture
def shots_folder() -> Path:
    folder = Path(os.environ.get("TL_E2E_SHOTS") or tempfile.mkdtemp(prefix="tl_core_e2e_shots_"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_whole_path_in_a_real_browser(app_url: str, tmp_path: Path, shots_folder: Path, ants_bees: Path, imagenet_weights: Path) -> None:
    expect = playwright_api.expect
    expect.set_options(timeout=90_000)  # the first page that needs TensorFlow waits for it to load
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGUMENTS)
        # Tall: Streamlit scrolls inside its own container, so a screenshot shows only the viewport.
        page = browser.new_page(viewport={"width": 1400, "height": 2400}, accept_downloads=True)
        page.set_default_timeout(60_000)

        def shot(name: str) -> None:
            page.wait_for_timeout(800)  # let charts finish drawing
            page.screenshot(path=str(shots_folder / f"{name}.png"), full_page=True)

        def open_page(title: str) -> None:
            _open_page(page, title)

        # 1. Data: upload the folder, see the summary.
        page.goto(app_url)
        expect(page.get_by_text("No dataset loaded yet")).to_be_visible()
        page.get_by_text("Upload a folder").click()
        page.locator('[data-testid="tl-folder-input"]').set_input_files(str(ants_bees))
        expect(page.get_by_text("398 images in 2 classes")).to_be_visible()
        shot("1_data")

        # 1b. Labels: every label judged by a model that never saw it; exclude the placeholder picture
        # in train/ants (the odd one out), and the run must leave it out and record that.
        open_page("Labels")
        expect(page.get_by_role("button", name="Look for wrong labels")).to_be_enabled()
        page.wait_for_timeout(1000)  # let the page's first run settle, so the click is not lost in a rerun
        page.get_by_role("button", name="Look for wrong labels").click()
        expect(page.get_by_text("Images judged").first).to_be_visible(timeout=180_000)
        page.get_by_role("tab", name=re.compile("Odd ones out")).click()
        card = page.locator('[data-testid="stColumn"]', has_text="imageNotFound.gif")
        card.locator('[data-testid="stSelectbox"]').click()
        page.get_by_role("option", name="Exclude", exact=True).click()
        page.get_by_role("button", name="Save the decisions on this page").click()
        expect(page.get_by_text("Saved 1 decision").first).to_be_visible()
        shot("1b_labels")

        # 2. Scenario: small data, similar to ImageNet -> feature extraction.
        open_page("Scenario")
        page.get_by_text("Yes: everyday photos", exact=False).first.click()
        expect(page.get_by_text("Scenario 1", exact=False).first).to_be_visible()
        page.get_by_role("button", name="Use feature extraction on the Setup page").click()
        shot("2_scenario")

        # 3. Setup: MobileNetV2 at a small size, the feature-extraction recipe as it is (its head epochs take seconds).
        open_page("Setup")
        expect(page.get_by_text("CPU", exact=False).first).to_be_visible()
        _choose_option(page, "Image size", "96 px")
        expect(page.get_by_text("Estimated time", exact=False).first).to_be_visible()
        page.wait_for_timeout(1500)
        shot("3_setup")

        # 4. Train: the chart appears and updates, the run finishes.
        open_page("Train")
        page.get_by_role("button", name="Start training").click()
        expect(page.locator('[data-testid="stPlotlyChart"]').first).to_be_visible(timeout=180_000)
        expect(page.get_by_text("accuracy", exact=False).first).to_be_visible()
        expect(page.get_by_text("Accuracy on held-out images", exact=False).first).to_be_visible(timeout=300_000)
        first_run = re.search(r"runs/([\w.-]+)", page.get_by_text("Run folder:", exact=False).first.inner_text()).group(1)
        applied = json.loads((Path(os.environ["TL_CORE_RUNS_DIR"]) / first_run / "run.json").read_text())["label_decisions"]
        assert [Path(path).name for path in applied["excluded"]] == ["imageNotFound.gif"]
        shot("4_train")

        # 5. Evaluate: the confusion matrix.
        open_page("Evaluate")
        expect(page.get_by_text("Confusion matrix", exact=False).first).to_be_visible()
        expect(page.locator('[data-testid="stPlotlyChart"]').first).to_be_visible()
        shot("5_evaluate")

        # 6. Export: download model.h5 and load it in a fresh Python without tl_core.
        open_page("Export")
        with page.expect_download() as download_info:
            page.get_by_role("button", name="model.h5", exact=False).first.click()
        model_path = tmp_path / "downloaded_model.h5"
        download_info.value.save_as(model_path)
        expect(page.get_by_text("Run it without Keras").first).to_be_visible()
        page.get_by_role("button", name=re.compile("^Make model.tflite")).click()  # converted and checked on request, in a child process
        expect(page.get_by_role("button", name=re.compile(r"model\.onnx · \d"))).to_be_visible(timeout=300_000)
        expect(page.get_by_role("button", name=re.compile("^Make model.tflite"))).to_have_count(0)
        # The 8-bit file is kept only where it gives the model's top class on 98 % of the held-out images; this tiny
        # model can miss that by an image, and the page then says so beside the file instead of offering it.
        int8_made = page.get_by_role("button", name=re.compile(r"model_int8\.tflite · \d")).count() == 1
        assert int8_made or page.get_by_text(re.compile(r"Not kept: same top class as the Keras model on \d+%")).count() == 1
        with page.expect_download() as download_info:
            page.get_by_role("button", name="model.onnx", exact=False).first.click()
        onnx_path = tmp_path / "downloaded_model.onnx"
        download_info.value.save_as(onnx_path)
        tries = sorted((ants_bees / "val" / "bees").glob("*.jpg"))[:2]
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files([str(path) for path in tries])
        expect(page.get_by_text(tries[0].name, exact=False).first).to_be_visible()
        expect(page.get_by_text("bees", exact=False).first).to_be_visible()
        page.get_by_text("Show where the model looked").click()  # Grad-CAM of each uploaded image
        expect(page.get_by_text("what speaks for", exact=False).first).to_be_visible(timeout=120_000)
        shot("6_export")

        # 7. History: the run is listed, finished, and is the one Evaluate and Export show. Training again from it
        # reuses every image (nothing was added), and the first run can then be reopened.
        open_page("History")
        expect(page.get_by_text("Compare two runs").first).to_be_visible()
        expect(page.get_by_role("button", name="Shown on Evaluate and Export")).to_be_visible()
        expect(page.locator('[data-testid="stDataFrame"]').first).to_be_visible()
        shot("7_history")
        page.get_by_role("button", name="Train again on the data loaded now").click()
        expect(page.get_by_text("Accuracy on held-out images", exact=False).first).to_be_visible(timeout=300_000)
        page.get_by_text("Notes from the run", exact=False).first.click()
        expect(page.get_by_text(re.compile(r"Trained again from .*: \d+ images reused \(pixels and features\), 0 new or changed")).first).to_be_visible()
        open_page("History")
        expect(page.get_by_text("Compare two runs").first).to_be_visible()
        shot("7b_history_after_training_again")
        page.get_by_role("combobox", name="Run", exact=True).click()
        page.get_by_role("option").nth(1).click()  # newest first: the second entry is the first run
        page.get_by_role("button", name="Open on Evaluate and Export").click()
        expect(page.get_by_role("button", name="Shown on Evaluate and Export")).to_be_visible()
        open_page("Evaluate")
        expect(page.get_by_text(first_run, exact=False).first).to_be_visible()
        browser.close()

    script = textwrap.dedent(
        f"""
        import json, numpy as np, keras, onnxruntime
        model = keras.models.load_model({str(model_path)!r})
        size = model.input_shape[1]
        image = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype("float32")
        probabilities = model.predict(image, verbose=0)
        session = onnxruntime.InferenceSession({str(onnx_path)!r}, providers=["CPUExecutionProvider"])
        onnx_difference = float(np.abs(session.run(None, {{"image": image}})[0] - probabilities).max())
        print(json.dumps({{"size": size, "outputs": model.output_shape[-1], "sum": float(probabilities.sum()), "onnx_difference": onnx_difference}}))
        """
    )
    environment = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    completed = subprocess.run([sys.executable, "-I", "-c", script], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-2000:]
    loaded = json.loads(completed.stdout.strip().splitlines()[-1])
    assert loaded["size"] == 96 and loaded["outputs"] == 2 and abs(loaded["sum"] - 1) < 1e-4
    assert loaded["onnx_difference"] < 1e-3  # the ONNX file the page offered gives the Keras model's answer
    print(f"screenshots in {shots_folder}")


FOLDER_CLASSES = {"apples": 900, "pears": 700, "plums": 500}


def test_a_page_address_opened_first_after_the_server_starts_runs_the_whole_app(app_url: str) -> None:
    """A tab left open on a page reconnects to a restarted server at that page's address; so does a bookmark.

    Until some session had opened the root address, Streamlit ran such an address's file in pages/ on its own, without
    app.py's set-up, and the page showed a KeyError for 'engine' (app.route_every_address_through_this_file).
    """
    expect = playwright_api.expect
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGUMENTS)
        for address, title in (("history", "History"), ("train", "4 · Train")):  # the server's first session, then a second one
            page = browser.new_context().new_page()
            page.goto(f"{app_url}/{address}")
            expect(page.locator("h1").first).to_have_text(title, timeout=90_000)
            expect(page.locator('[data-testid="stSidebarNav"]')).to_be_visible()
            page.wait_for_timeout(1500)  # a failing page shows its exception right after the title
            assert page.locator('[data-testid="stException"]').count() == 0
        browser.close()


def test_a_folder_of_thousands_of_images_uploads_and_an_upload_can_be_cancelled(app_url: str, tmp_path: Path, shots_folder: Path) -> None:
    """2,100 generated images go through the folder uploader and every one is counted, per class; a second upload is cancelled."""
    from conftest import write_image

    folder = tmp_path / "fruit"
    rng = np.random.default_rng(0)
    for class_index, (name, count) in enumerate(FOLDER_CLASSES.items()):
        for index in range(count):
            picture = np.clip(rng.normal(60 + 60 * class_index, 30, (32, 32, 3)), 0, 255).astype(np.uint8)
            write_image(folder / name / f"{name}_{index:04d}.jpg", picture, "JPEG")
    (folder / ".DS_Store").write_bytes(b"litter")  # passed over, and said so
    total = sum(FOLDER_CLASSES.values())
    expect = playwright_api.expect
    expect.set_options(timeout=120_000)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGUMENTS)
        page = browser.new_page(viewport={"width": 1400, "height": 2000})
        page.goto(app_url)
        page.get_by_text("Upload a folder").click()
        chooser = page.locator('[data-testid="tl-folder-input"]')
        chooser.set_input_files(str(folder))
        expect(page.get_by_text(f"{total:,} images in 3 classes")).to_be_visible()
        table = page.locator('[data-testid="stTable"]')
        for name, count in FOLDER_CLASSES.items():
            row = table.locator("tr", has_text=name)
            expect(row).to_contain_text(f"{count}")
            assert row.locator("td").last.inner_text().strip() == str(count), f"{name}: every image is counted"
        expect(page.get_by_text("system files such as .DS_Store passed over", exact=False)).to_be_visible()
        page.screenshot(path=str(shots_folder / "folder_upload_done.png"), full_page=True)

        # A second upload: the first batch goes through, the next ones hang (a slow network), and the user cancels.
        held = []
        batches = {"count": 0}

        def slow_network(route) -> None:
            batches["count"] += 1
            if batches["count"] == 1:
                route.continue_()
            else:
                held.append(route)

        page.route("**/tl-upload/*/batch", slow_network)
        chooser.set_input_files(str(folder))
        status = page.locator('[data-testid="tl-folder-status"]')
        expect(status).to_contain_text(f"500 of {total + 1:,} files")  # .DS_Store travels too; the scan passes it over
        page.screenshot(path=str(shots_folder / "folder_upload_in_progress.png"), full_page=True)
        # The page stays usable meanwhile: the sidebar still answers and shows the first dataset.
        expect(page.locator('[data-testid="stSidebar"]').get_by_text(f"{total:,} images, 3 classes")).to_be_visible()
        page.locator('[data-testid="tl-folder-cancel"]').click()
        expect(page.locator('[data-testid="tl-folder-message"]')).to_contain_text("Upload cancelled; nothing from it was kept.")
        page.unroute("**/tl-upload/*/batch")
        for route in held:
            try:
                route.abort()
            except playwright_api.Error:
                pass  # the browser already dropped the cancelled request
        expect(page.get_by_text(f"{total:,} images in 3 classes")).to_be_visible()
        deadline = time.time() + 20  # the cancel request and the page's rerun both discard; give them a moment
        while (staged := [path for path in tmp_path.glob("tl_core_session_*/data/.staging-*/**/*") if path.is_file()]) and time.time() < deadline:
            time.sleep(0.2)
        assert staged == [], "a cancelled upload leaves no files behind"

        # Usable afterwards: another page opens, and the same folder uploads again.
        page.locator('[data-testid="stSidebarNav"] a', has_text="Scenario").first.click()
        expect(page.get_by_text("Where your data sits", exact=False).first).to_be_visible()
        page.locator('[data-testid="stSidebarNav"] a', has_text="Data").first.click()
        # Back on the Data page the folder uploader is still the chosen source: no click needed (and none lost
        # to the page's first run, which a click right after switching pages can be).
        expect(page.get_by_role("radio", name="Upload a folder")).to_be_checked()
        expect(page.locator('[data-testid="tl-folder-input"]')).to_be_attached()
        page.locator('[data-testid="tl-folder-input"]').set_input_files(str(folder))
        expect(page.locator('[data-testid="tl-folder-message"]')).to_contain_text(f"Sent {total + 1:,} files")
        expect(page.get_by_text(f"{total:,} images in 3 classes")).to_be_visible()
        browser.close()


SHARED_PASSWORD = "correct horse battery staple"


def test_sharing_mode_signs_in_uploads_and_trains_and_keeps_strangers_out(tmp_path: Path, shots_folder: Path, ants_bees: Path, imagenet_weights: Path) -> None:
    expect = playwright_api.expect
    expect.set_options(timeout=90_000)
    log = open(tmp_path / "streamlit.log", "w")  # noqa: SIM115 - closed in the finally below
    server, url = start_app_server(tmp_path, log, TL_APP_PASSWORD=SHARED_PASSWORD, TL_CORE_BROWSE_ROOT=str(ants_bees.parent))
    try:
        with playwright_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGUMENTS)
            page = browser.new_page(viewport={"width": 1400, "height": 2400})  # tall: the Setup page's drop-downs open inside the window
            page.set_default_timeout(60_000)

            def open_page(title: str) -> None:
                _open_page(page, title)

            # Every visitor signs in first: the app itself is not even loaded before.
            page.goto(url)
            assert "/tl-sign-in" in page.url
            page.screenshot(path=str(shots_folder / "sharing_sign_in.png"))
            page.fill("#password", "not the password")
            page.click("button[type=submit]")
            expect(page.get_by_text("That is not the password of this app.")).to_be_visible()
            page.fill("#password", SHARED_PASSWORD)
            page.click("button[type=submit]")
            expect(page.get_by_text("No dataset loaded yet")).to_be_visible()
            expect(page.get_by_role("link", name="Sign out")).to_be_visible()

            # Upload a folder, then train a tiny run: feature extraction at 96 px.
            page.get_by_text("Upload a folder").click()
            page.locator('[data-testid="tl-folder-input"]').set_input_files(str(ants_bees))
            expect(page.get_by_text("398 images in 2 classes")).to_be_visible()
            open_page("Scenario")
            page.get_by_text("Yes: everyday photos", exact=False).first.click()
            expect(page.get_by_text("Scenario 1", exact=False).first).to_be_visible()
            page.get_by_role("button", name="Use feature extraction on the Setup page").click()
            open_page("Setup")
            expect(page.get_by_text("CPU", exact=False).first).to_be_visible()
            _choose_option(page, "Image size", "96 px")
            expect(page.get_by_text("Estimated time", exact=False).first).to_be_visible()
            page.wait_for_timeout(1500)
            open_page("Train")
            page.get_by_role("button", name="Start training").click()
            expect(page.get_by_text("Accuracy on held-out images", exact=False).first).to_be_visible(timeout=300_000)
            run_name = re.search(r"runs/([\w.-]+)", page.get_by_text("Run folder:", exact=False).first.inner_text()).group(1)
            summary = json.loads((Path(os.environ["TL_CORE_RUNS_DIR"]) / run_name / "run.json").read_text())
            assert summary["status"] == "finished" and len(summary["created_by"]) == 32, "the run records who trained it"
            page.screenshot(path=str(shots_folder / "sharing_trained.png"), full_page=True)

            # A fresh browser without the password: the sign-in page, and no route answers it.
            stranger = browser.new_context().new_page()
            stranger.goto(url + "/")
            assert "/tl-sign-in" in stranger.url and stranger.title() == "Sign in · Transfer Learning Studio"
            assert stranger.request.get(url + "/_stcore/host-config").status == 401
            refused = stranger.request.post(url + "/tl-upload/any/batch", data="x", headers={"Content-Type": "text/plain"})
            assert refused.status == 401
            assert sorted(tmp_path.glob("tl_core_session_*")) != [], "the signed-in session has its folder"
            browser.close()
    finally:
        server.terminate()  # SIGTERM, as systemd or docker stop it: a clean stop
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    assert sorted(path.name for path in tmp_path.glob("tl_core_session_*")) == [], "a clean stop removes every session's folder"
    print(f"screenshots in {shots_folder}")


def _open_page(page, title: str) -> None:
    """Opens a page from the sidebar and waits until the browser is on it."""
    # A click that lands while the page in view is rerunning (a run ending, a fragment refreshing) can be lost: the
    # address then stays where it was. Click again until it changes (seen on a slower CI machine).
    address = re.compile(rf"/{title.split()[0].lower()}/?(\?.*)?$")
    for attempt in range(4):
        page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
        try:
            page.wait_for_url(address, timeout=15_000)
            break
        except Exception:
            if attempt == 3:
                raise
    page.wait_for_load_state("networkidle")


def _choose_option(page, label: str, option: str) -> None:
    """Picks an option of a Streamlit selectbox (an ARIA combobox) found by its label."""
    # A rerun of the page (a fragment finishing, a widget settling) closes an open list: open it again then.
    for attempt in range(4):
        page.get_by_role("combobox", name=label).click()
        choice = page.get_by_role("option", name=option, exact=False).first
        try:
            choice.wait_for(state="visible", timeout=10_000)
            choice.click(timeout=10_000)  # the list may close between the two (seen under load: "element was detached")
        except Exception:
            if attempt == 3:
                raise
            page.keyboard.press("Escape")
            continue
        break
    page.wait_for_timeout(500)
