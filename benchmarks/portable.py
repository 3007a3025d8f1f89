"""Which backbones convert to TFLite and ONNX: ``python -m benchmarks.portable``.

For every backbone in the table (or those named with ``--backbones``) this
builds the classifier a run exports (backbone, new head, test-time flip
inside) at the backbone's own image size, with random weights (converting
does not depend on the weights' values, and no download is needed), then
writes and checks each portable file as a run does (``tl_core.runs.portable``):
the runtime's probabilities against the Keras model's on a few random images.
It prints, per backbone and format, whether the file was kept, its size, the
largest difference and the seconds taken, or the converter's message. The
the table in docs/benchmarks.md comes from here; nothing here is a test.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def check_backbone(name: str, formats: tuple[str, ...], images: int = 4) -> list[tuple[str, str, str]]:
    """One row per format: (format, verdict, detail)."""
    import keras

    from tl_core.models.backbones import get_backbone
    from tl_core.models.build import build_backbone, build_classifier, build_head, with_test_time_flip
    from tl_core.runs.portable import export_portable

    spec = get_backbone(name)
    size = spec.default_size
    keras.utils.set_random_seed(0)
    classifier, _ = build_classifier(spec, build_backbone(spec, "none"), build_head(spec.feature_dim, 3), size)
    model = with_test_time_flip(classifier, size)
    pixels = np.random.default_rng(0).uniform(0, 255, (images, size, size, 3)).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for check in export_portable(model, folder, formats, pixels, "random images"):
            if check.ok:
                detail = f"{check.size_bytes / 1e6:.1f} MB, largest difference {check.max_difference:.1e}, {check.seconds:.0f} s"
                rows.append((check.format, "kept", detail))
            else:
                rows.append((check.format, "NOT KEPT", check.message))
    keras.backend.clear_session()
    return rows


def main(argv: list[str] | None = None) -> int:
    from tl_core.models.backbones import list_backbones

    parser = argparse.ArgumentParser(prog="python -m benchmarks.portable", description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=None, help="backbone names (default: every backbone in the table)")
    parser.add_argument("--formats", nargs="+", default=["tflite", "onnx"], help="formats to check (default tflite onnx)")
    arguments = parser.parse_args(argv)
    names = arguments.backbones or [spec.name for spec in list_backbones()]
    print(f"{'backbone':<20} {'format':<7} {'result':<9} detail")
    for name in names:
        started = time.perf_counter()
        for file_format, verdict, detail in check_backbone(name, tuple(arguments.formats)):
            print(f"{name:<20} {file_format:<7} {verdict:<9} {detail}", flush=True)
        print(f"{name:<20} (all formats: {time.perf_counter() - started:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
