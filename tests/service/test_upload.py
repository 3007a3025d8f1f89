"""The folder uploader's receiving end: batches, hostile names, limits, cancel, and its web routes."""

from __future__ import annotations

import errno
import gc
import json
import re
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.testclient import TestClient

from tl_core.errors import DataError
from tl_core.service.sharing import LOOPBACK_NAMES, Sharing
from tl_core.service.upload import FolderUpload, UploadLimits, checked_relative_path, find_upload
from tl_core.service.workspace import ALIVE_FILE, Workspace
from ui import access
from ui.folder_upload import BEGIN_BODY_BYTES, upload_routes


def batch(files: dict[str, bytes]) -> bytes:
    """A batch as the browser sends it: manifest line, newline, the files' bytes in order."""
    manifest = json.dumps({"files": [{"path": path, "size": len(data)} for path, data in files.items()]})
    return manifest.encode() + b"\n" + b"".join(files.values())


def _everything_under(folder: Path) -> list[str]:
    """Every file under ``folder`` but the session folders' own lock files."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file() and path.name != ALIVE_FILE)


def test_a_folder_sent_in_batches_arrives_with_its_paths(tmp_path: Path) -> None:
    workspace = Workspace.create(tmp_path)
    upload = workspace.open_folder_upload("folder_upload")
    first = {"photos/train/cats/1.jpg": b"cat one", "photos/train/dogs/2.jpg": b"dog"}
    second = {"photos/val/cats/3.jpg": b"cat three", "photos/.DS_Store": b"litter", "photos/val/dogs/4.jpg": b""}
    total = sum(len(data) for data in (*first.values(), *second.values()))
    assert upload.begin(5, total).status == "receiving"
    assert upload.receive_batch(batch(first)).files == 2
    progress = upload.receive_batch(batch(second))
    assert (progress.files, progress.bytes, progress.total_files, progress.total_bytes) == (5, total, 5, total)
    assert upload.chosen_folder == "photos"
    folder = workspace.finish_folder_upload(upload)
    assert folder == workspace.data_dir("folder_upload") / "photos", "the dataset keeps the name of the folder the user chose"
    assert _everything_under(folder) == sorted([".DS_Store", "train/cats/1.jpg", "train/dogs/2.jpg", "val/cats/3.jpg", "val/dogs/4.jpg"])
    assert (folder / "val" / "cats" / "3.jpg").read_bytes() == b"cat three"
    assert upload.progress().status == "finished"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../evil.jpg", "Refused '../evil.jpg': a path with '..' could write outside the session folder."),
        ("cats/../../evil.jpg", "Refused 'cats/../../evil.jpg': a path with '..' could write outside the session folder."),
        ("..\\..\\evil.jpg", "Refused '..\\..\\evil.jpg': a path with '..' could write outside the session folder."),
        ("/etc/evil.jpg", "Refused '/etc/evil.jpg': an absolute path in an upload could write outside the session folder."),
        ("C:/evil.jpg", "Refused 'C:/evil.jpg': an absolute path in an upload could write outside the session folder."),
        ("cats/bad\x00name.jpg", "Refused 'cats/bad\\x00name.jpg': the name holds a control character"),
        ("cats/" + "x" * 300 + ".jpg", "a name longer than 255 bytes cannot be saved on most disks"),
    ],
)
def test_hostile_names_fail_the_upload_and_nothing_lands_outside(tmp_path: Path, name: str, message: str) -> None:
    workspace = Workspace.create(tmp_path / "base")
    upload = workspace.open_folder_upload()
    upload.begin(2, 2)
    with pytest.raises(DataError, match=re.escape(message)):
        upload.receive_batch(batch({"cats/ok.jpg": b"1", name: b"2"}))
    assert upload.progress().status == "failed"
    assert _everything_under(tmp_path) == [], "nothing is written anywhere, not even the good file of the batch"


def test_odd_but_harmless_names_are_kept_and_cleaned(tmp_path: Path) -> None:
    assert str(checked_relative_path("./cats//ünïcode café 1.jpg")) == "cats/ünïcode café 1.jpg"
    assert str(checked_relative_path("cats\\windows.jpg")) == "cats/windows.jpg"


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ((3, 30, "a/1.jpg", 10), "The chosen folder holds 3 files while at most 2 are accepted."),
        ((2, 2_000_000, "a/1.jpg", 10), "The chosen folder totals 2.0 MB while at most 1.0 MB are accepted."),
        ((1, 600_000, "a/huge.tif", 600_000), "'a/huge.tif' is 600.0 kB while a single file may have at most 500.0 kB"),
    ],
)
def test_limits_are_checked_before_the_first_byte(tmp_path: Path, plan: tuple, message: str) -> None:
    limits = UploadLimits(max_files=2, max_total_bytes=1_000_000, max_file_bytes=500_000)
    upload = Workspace.create(tmp_path).open_folder_upload(limits=limits)
    with pytest.raises(DataError, match=re.escape(message)):
        upload.begin(*plan)
    assert upload.progress().status == "waiting"


def test_a_browser_that_sends_more_than_it_announced_is_stopped(tmp_path: Path) -> None:
    upload = Workspace.create(tmp_path).open_folder_upload()
    upload.begin(1, 3)
    with pytest.raises(DataError, match=re.escape("The browser sent more than it announced (2 files, 6 bytes against 1 files, 3 bytes).")):
        upload.receive_batch(batch({"a/1.jpg": b"one", "a/2.jpg": b"two"}))
    assert _everything_under(upload.staging) == []


def test_a_single_file_over_the_limit_is_refused_even_if_the_plan_hid_it(tmp_path: Path) -> None:
    upload = Workspace.create(tmp_path).open_folder_upload(limits=UploadLimits(max_file_bytes=4))
    upload.begin(1, 10, "a/small.jpg", 1)
    with pytest.raises(DataError, match=re.escape("'a/big.jpg' is 10 bytes while a single file may have at most 4 bytes")):
        upload.receive_batch(batch({"a/big.jpg": b"0123456789"}))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"files": [{"path": "a/1.jpg", "size": 5}]}\nabc', "carries 3 bytes where its manifest declares 5: it was cut short"),
        (b"no manifest line at all", "has no manifest line"),
        (b'{"files": [{"path": "a/1.jpg"}]}\n', "has an unreadable manifest"),
        (b'{"files": [{"path": "a/1.jpg", "size": -1}]}\n', "a file size that is not a whole number of bytes"),
    ],
)
def test_malformed_batches_fail_with_a_reason(tmp_path: Path, body: bytes, message: str) -> None:
    upload = Workspace.create(tmp_path).open_folder_upload()
    upload.begin(1, 5)
    with pytest.raises(DataError, match=re.escape(message)):
        upload.receive_batch(body)


def test_the_same_path_twice_is_refused(tmp_path: Path) -> None:
    upload = Workspace.create(tmp_path).open_folder_upload()
    upload.begin(2, 2)
    upload.receive_batch(batch({"a/1.jpg": b"1"}))
    with pytest.raises(DataError, match=re.escape("'a/1.jpg' was sent twice in one upload.")):
        upload.receive_batch(batch({"a/1.jpg": b"2"}))


def test_cancel_discards_what_arrived_and_a_new_begin_starts_clean(tmp_path: Path) -> None:
    workspace = Workspace.create(tmp_path)
    upload = workspace.open_folder_upload()
    upload.begin(2, 2)
    upload.receive_batch(batch({"a/1.jpg": b"1"}))
    assert upload.cancel().status == "cancelled"
    assert _everything_under(upload.staging) == []
    with pytest.raises(DataError, match="This upload is cancelled, so no more files are taken"):
        upload.receive_batch(batch({"b/2.jpg": b"2"}))
    upload.begin(1, 1)
    upload.receive_batch(batch({"b/2.jpg": b"2"}))
    assert _everything_under(workspace.finish_folder_upload(upload)) == ["2.jpg"]  # inside the folder 'b' the user chose


def test_an_incomplete_upload_cannot_become_the_dataset(tmp_path: Path) -> None:
    workspace = Workspace.create(tmp_path)
    upload = workspace.open_folder_upload()
    upload.begin(2, 2)
    upload.receive_batch(batch({"a/1.jpg": b"1"}))
    with pytest.raises(DataError, match=re.escape("Only 1 of 2 files (1 bytes of 2 bytes) arrived.")):
        workspace.finish_folder_upload(upload)
    assert not workspace.data_dir(upload.label).exists()


def test_a_new_upload_replaces_the_previous_dataset_only_when_finished(tmp_path: Path) -> None:
    workspace = Workspace.create(tmp_path)
    first = workspace.open_folder_upload("folder_upload")
    first.begin(1, 5)
    first.receive_batch(batch({"cats/1.jpg": b"first"}))
    folder = workspace.finish_folder_upload(first)
    second = workspace.open_folder_upload("folder_upload")
    second.begin(1, 6)
    second.receive_batch(batch({"cats/1.jpg": b"second"}))
    assert (folder / "1.jpg").read_bytes() == b"first", "the old dataset stays until the new one is complete"
    workspace.finish_folder_upload(second)
    assert (folder / "1.jpg").read_bytes() == b"second"


def test_a_full_disk_fails_the_upload_with_what_to_do(tmp_path: Path, monkeypatch) -> None:
    upload = Workspace.create(tmp_path).open_folder_upload()
    upload.begin(1, 1)

    def full_disk(*arguments, **options):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("tl_core.service.upload.open", full_disk, raising=False)
    message = (
        "Could not save 'cats/1.jpg' in the session folder: No space left on device. "
        "Free some disk space (or set TMPDIR to a disk with room and restart the app), or give the dataset's local folder path instead."
    )
    with pytest.raises(DataError, match=re.escape(message)):
        upload.receive_batch(batch({"cats/1.jpg": b"1"}))
    assert upload.progress().status == "failed"


def test_limits_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("TL_CORE_MAX_UPLOAD_FILES", "10")
    monkeypatch.setenv("TL_CORE_MAX_UPLOAD_MB", "1.5")
    monkeypatch.setenv("TL_CORE_MAX_FILE_MB", "2")
    assert UploadLimits.from_environment() == UploadLimits(10, 1_500_000, 2_000_000)  # megabytes of 10^6 bytes
    monkeypatch.setenv("TL_CORE_MAX_UPLOAD_FILES", "lots")
    with pytest.raises(DataError, match=re.escape("TL_CORE_MAX_UPLOAD_FILES='lots' is not a positive number.")):
        UploadLimits.from_environment()


def test_an_upload_is_found_by_its_token_only_while_its_session_keeps_it(tmp_path: Path) -> None:
    upload = Workspace.create(tmp_path).open_folder_upload()
    token, staging = upload.token, upload.staging
    assert find_upload(token) is upload
    del upload
    gc.collect()
    with pytest.raises(DataError, match="This upload is no longer open"):
        find_upload(token)
    assert not staging.exists()


APP_URL = "http://localhost:8501"
OWN_PAGE = {"X-TL-Upload": "1", "Origin": APP_URL}  # what the uploader's own script sends


def _app(monkeypatch: pytest.MonkeyPatch) -> Starlette:
    monkeypatch.setattr(access, "sharing", lambda: Sharing("localhost", hosts=LOOPBACK_NAMES))
    return Starlette(routes=upload_routes(), middleware=[Middleware(access.AccessGate)])


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> TestClient:
    return TestClient(_app(monkeypatch), base_url=APP_URL, headers=OWN_PAGE)


def test_the_routes_take_a_whole_upload(tmp_path: Path, client: TestClient) -> None:
    workspace = Workspace.create(tmp_path)
    upload: FolderUpload = workspace.open_folder_upload()
    url = f"/tl-upload/{upload.token}"
    assert client.post(f"{url}/begin", json={"files": 2, "bytes": 4, "largest_name": "a/1.jpg", "largest_bytes": 2}).json()["status"] == "receiving"
    answer = client.post(f"{url}/batch", content=batch({"a/1.jpg": b"11", "b/2.jpg": b"22"}))
    assert answer.status_code == 200 and answer.json()["files"] == 2
    assert _everything_under(workspace.finish_folder_upload(upload)) == ["a/1.jpg", "b/2.jpg"]


def test_the_routes_answer_errors_with_the_message(tmp_path: Path, client: TestClient) -> None:
    upload = Workspace.create(tmp_path).open_folder_upload(limits=UploadLimits(max_files=1, max_file_bytes=1))
    url = f"/tl-upload/{upload.token}"
    refused = client.post(f"{url}/begin", json={"files": 5, "bytes": 5})
    assert refused.status_code == 400 and "holds 5 files while at most 1 are accepted" in refused.json()["error"]
    assert client.post(f"{url}/begin", json={"files": "many"}).status_code == 400
    unknown = client.post("/tl-upload/not-a-token/batch", content=batch({"a/1.jpg": b"1"}))
    assert unknown.status_code == 400 and "no longer open" in unknown.json()["error"]
    client.post(f"{url}/begin", json={"files": 1, "bytes": 1})
    oversized = client.post(f"{url}/batch", content=b"x" * (upload.limits.max_request_bytes + 1))
    assert oversized.status_code == 413 and upload.progress().status == "cancelled"
    assert client.post(f"{url}/cancel").json()["status"] == "cancelled"
    huge_plan = client.post(f"{url}/begin", content=b'{"files": 1, "bytes": 1, "largest_name": "' + b"x" * BEGIN_BODY_BYTES + b'"}')
    assert huge_plan.status_code == 413 and f"larger than the {BEGIN_BODY_BYTES:,} bytes this route takes" in huge_plan.json()["error"]


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        # A no-cors fetch from a page on another local port: a "simple" text/plain POST, which needs no preflight.
        ({"Origin": "http://localhost:5173", "Content-Type": "text/plain"}, "This upload lacks the X-TL-Upload header that the app's own page sends"),
        ({"Origin": "http://localhost:5173", "X-TL-Upload": "1"}, "This upload came from the page 'http://localhost:5173', not from the app at 'localhost:8501'."),
        ({"X-TL-Upload": "1"}, "This upload came from the page 'None', not from the app"),
        # DNS rebinding: the page's own name now points here, so Origin and Host agree; the gate refuses the name.
        ({"Host": "rebind.attacker.example:8501", "Origin": "http://rebind.attacker.example:8501", "X-TL-Upload": "1"}, "not to 'rebind.attacker.example:8501'"),
    ],
)
def test_a_request_from_another_page_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, headers: dict, message: str) -> None:
    upload = Workspace.create(tmp_path).open_folder_upload()
    upload.begin(1, 4)
    stranger = TestClient(_app(monkeypatch), base_url=APP_URL)
    for route, body in (("batch", batch({"dogs/evil.jpg": b"evil"})), ("begin", b'{"files": 1, "bytes": 4}'), ("cancel", b"")):
        answer = stranger.post(f"/tl-upload/{upload.token}/{route}", content=body, headers=headers)
        assert answer.status_code == 403 and message in answer.text, route
    assert _everything_under(upload.staging) == [] and upload.progress().status == "receiving"  # untouched: the real page goes on


def _post_in_chunks(app, path: str, chunks: list[bytes], headers: dict[str, str]) -> tuple[int, dict, int]:
    """POSTs ``chunks`` straight into the ASGI app, as a server hands them over; returns the status, the answer and how many chunks the app pulled."""
    import asyncio

    pulled = 0
    sent: list[dict] = []

    async def receive() -> dict:
        nonlocal pulled
        if pulled < len(chunks):
            pulled += 1
            return {"type": "http.request", "body": chunks[pulled - 1], "more_body": pulled < len(chunks)}
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
        "query_string": b"", "root_path": "", "client": ("127.0.0.1", 50000), "server": ("localhost", 8501),
        "headers": [(key.lower().encode(), value.encode()) for key, value in {"Host": "localhost:8501", **OWN_PAGE, **headers}.items()],
    }
    asyncio.run(app(scope, receive, send))
    status = next(message["status"] for message in sent if message["type"] == "http.response.start")
    body = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    return status, json.loads(body), pulled


def test_an_over_cap_body_is_refused_without_being_read_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _app(monkeypatch)
    upload = Workspace.create(tmp_path).open_folder_upload(limits=UploadLimits(max_file_bytes=1))
    cap = upload.limits.max_request_bytes  # 12 MB
    megabytes = [b"x" * 1024**2] * 20
    upload.begin(1, 1)
    status, answer, pulled = _post_in_chunks(app, f"/tl-upload/{upload.token}/batch", megabytes, {})  # chunked: no Content-Length
    assert status == 411 and answer["error"].startswith("The request came without a Content-Length (a chunked body), which the app does not take.")
    assert pulled == 0 and upload.progress().status == "receiving"  # refused before the upload is even looked up
    status, answer, pulled = _post_in_chunks(app, f"/tl-upload/{upload.token}/batch", megabytes, {"Content-Length": "1000"})  # a length that lies
    assert status == 413 and f"sent more than the {cap:,} bytes" in answer["error"]
    assert pulled == cap // 1024**2 + 1, "reading stops at the first chunk past the cap"
    status, answer, pulled = _post_in_chunks(app, f"/tl-upload/{upload.token}/begin", [b"{}"], {})
    assert status == 411 and pulled == 0


def test_a_finished_upload_cannot_be_reopened(tmp_path: Path) -> None:
    workspace = Workspace.create(tmp_path)
    upload = workspace.open_folder_upload()
    upload.begin(1, 3)
    upload.receive_batch(batch({"cats/1.jpg": b"cat"}))
    folder = workspace.finish_folder_upload(upload)
    with pytest.raises(DataError, match=re.escape("This upload has finished and its files are the dataset now, so it cannot start again.")):
        upload.begin(1, 3)
    assert upload.progress().status == "finished" and _everything_under(folder) == ["1.jpg"] and folder.name == "cats"
    with pytest.raises(DataError, match="This upload is finished; there is nothing to finish"):
        workspace.finish_folder_upload(upload)
    assert _everything_under(folder) == ["1.jpg"], "the dataset is still there"


def test_no_batch_lands_while_the_upload_is_promoted(tmp_path: Path) -> None:
    import threading

    workspace = Workspace.create(tmp_path)
    upload = workspace.open_folder_upload()
    upload.begin(1, 3)
    upload.receive_batch(batch({"cats/1.jpg": b"cat"}))
    late: list[BaseException] = []

    def promote(staging: Path) -> Path:
        sender = threading.Thread(target=lambda: late.append(pytest.raises(DataError, upload.receive_batch, batch({"cats/2.jpg": b"x"})).value))
        sender.start()
        sender.join(0.3)
        assert sender.is_alive(), "a batch waits while the upload is being promoted"
        promote.sender = sender
        return workspace._promote(staging, upload.label)

    upload.finish(promote=promote)
    promote.sender.join(5)
    assert "This upload is finished, so no more files are taken" in str(late[0])
    assert _everything_under(workspace.data_dir(upload.label)) == ["cats/1.jpg"]


def test_a_path_too_deep_for_the_disk_says_so(tmp_path: Path) -> None:
    upload = Workspace.create(tmp_path).open_folder_upload()
    deep = "/".join(["d" * 250] * 20) + "/1.jpg"  # every name fits, the whole path does not (over 4,096 bytes)
    upload.begin(1, 1)
    with pytest.raises(DataError) as refused:
        upload.receive_batch(batch({deep: b"1"}))
    assert "Its path is longer than this disk allows (folders nested too deep, or a name over 255 bytes)." in str(refused.value)
    assert "disk space" not in str(refused.value)


def test_a_file_and_a_folder_of_the_same_name_say_so(tmp_path: Path) -> None:
    upload = Workspace.create(tmp_path).open_folder_upload()
    upload.begin(3, 3)
    upload.receive_batch(batch({"cats/1.jpg": b"1"}))
    with pytest.raises(DataError, match=re.escape("'cats' is both a file and a folder in this upload, which no disk can hold.")):
        upload.receive_batch(batch({"cats": b"2"}))
    upload.begin(2, 2)
    with pytest.raises(DataError, match=re.escape("'dogs' is both a file and a folder in this upload")):
        upload.receive_batch(batch({"dogs": b"1", "dogs/2.jpg": b"2"}))
