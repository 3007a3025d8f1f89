"""The folder uploader: a small browser component and the web routes it sends files to.

Streamlit's ``st.file_uploader`` sends a folder one request per file and keeps
every file in the page's state; at a few thousand photos the tab stalls (the
docs/benchmarks.md has the measurements). This uploader lets the
browser read the chosen folder and send it in batches of about 8 MB, each one
request, straight to the session's staging folder, without a rerun of the page
until the last batch has arrived. The bytes go from the file on disk into the
request (a ``Blob`` of the files); JavaScript never copies them.

- ``upload_routes()``: the ``/tl-upload/{token}/...`` routes that ``app.py``
  adds to Streamlit's server (``st.App``). They hand each request to the
  ``tl_core.service.upload.FolderUpload`` the token names; the work is done there.
  A request must come from the app's own page (``ui.access.refused``: a known
  ``Host``, a matching ``Origin``, the ``X-TL-Upload`` header), and its body
  must say its length and is read as a stream, cut off at the cap
  (``ui.access.read_body``): a batch at ``UploadLimits.max_request_bytes``,
  the plan sent to ``/begin`` at ``BEGIN_BODY_BYTES``.
- ``folder_uploader(upload)``: draws the component (choose or drop a folder,
  a progress bar with files and megabytes, Cancel) and returns what ended in
  this run: ``None`` while nothing has, else a dict with ``status``
  ("finished", "cancelled" or "failed"), ``files``, ``bytes``, ``seconds``
  and ``message``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import streamlit as st
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from tl_core.errors import DataError
from tl_core.service.upload import BATCH_BYTES, BATCH_FILES, FolderUpload, find_upload
from ui.access import BodyRefused, read_body, refused

ROUTE_PREFIX = "/tl-upload"
BEGIN_BODY_BYTES = 16 * 1024  # the plan: four numbers and the largest file's path
_SCRIPT = Path(__file__).resolve().parents[1] / "assets" / "folder_upload.js"


def upload_routes() -> list[Route]:
    """The routes the uploader's browser side calls: begin, batch and cancel (under ``server.baseUrlPath``)."""
    prefix = _base_path() + ROUTE_PREFIX + "/{token}"
    return [
        Route(prefix + "/begin", _begin, methods=["POST"]),
        Route(prefix + "/batch", _batch, methods=["POST"]),
        Route(prefix + "/cancel", _cancel, methods=["POST"]),
    ]


async def _begin(request: Request) -> JSONResponse:
    if (refusal := refused(request, length_required=True)) is not None:
        return refusal
    try:
        upload = find_upload(request.path_params["token"])
        plan = json.loads(await read_body(request, BEGIN_BODY_BYTES))
        progress = await run_in_threadpool(
            upload.begin, int(plan["files"]), int(plan["bytes"]), str(plan.get("largest_name", "")), int(plan.get("largest_bytes", 0))
        )
    except BodyRefused as error:
        return JSONResponse({"error": str(error)}, status_code=error.status)
    except (ValueError, KeyError, TypeError) as error:
        return JSONResponse({"error": f"The upload's plan is unreadable ({error}). Reload the page and choose the folder again."}, status_code=400)
    except DataError as error:
        return JSONResponse({"error": str(error)}, status_code=400)
    return JSONResponse(progress.as_dict())


async def _batch(request: Request) -> JSONResponse:
    if (refusal := refused(request, length_required=True)) is not None:
        return refusal
    try:
        upload = find_upload(request.path_params["token"])
    except DataError as error:
        return JSONResponse({"error": str(error)}, status_code=400)
    try:
        body = await read_body(request, upload.limits.max_request_bytes)
        progress = await run_in_threadpool(upload.receive_batch, body)
    except BodyRefused as error:
        await run_in_threadpool(upload.cancel)  # the uploader never sends such a batch: whatever sent it, the upload is over
        return JSONResponse({"error": f"{error} The upload was cancelled; choose the folder again."}, status_code=error.status)
    except DataError as error:
        return JSONResponse({"error": str(error)}, status_code=400)
    return JSONResponse(progress.as_dict())


async def _cancel(request: Request) -> JSONResponse:
    if (refusal := refused(request)) is not None:
        return refusal
    try:
        upload = find_upload(request.path_params["token"])
    except DataError as error:
        return JSONResponse({"error": str(error)}, status_code=404)
    return JSONResponse((await run_in_threadpool(upload.cancel)).as_dict())


@functools.cache
def _component():
    return st.components.v2.component("tl_folder_upload", js=_SCRIPT.read_text(encoding="utf-8"), isolate_styles=False)


def folder_uploader(upload: FolderUpload, key: str = "folder_uploader", note: str = "") -> dict | None:
    """Draws the uploader for ``upload`` and returns how an upload ended in this run (or ``None``).

    ``note`` is what the box says when it has nothing of its own to say: the outcome of the last
    upload, so that it survives the box being drawn anew (a page switch, a rerun that rebuilds it).
    """
    data = {
        "url": f"{_base_path()}{ROUTE_PREFIX}/{upload.token}",
        "limits": upload.limits.as_dict(),
        "batch_bytes": BATCH_BYTES,
        "batch_files": BATCH_FILES,
        "note": note,
    }
    result = _component()(key=key, data=data, on_ended_change=lambda: None)
    return result.ended


def _base_path() -> str:
    """Where the app is served under (``server.baseUrlPath``), as a prefix such as ``/studio`` or ``""``."""
    base = (st.get_option("server.baseUrlPath") or "").strip("/")
    return f"/{base}" if base else ""
