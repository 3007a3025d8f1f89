"""What a user waits for on a CPU: whole processes, our command line against the articles' recipe, on the same images.

    python -m benchmarks.first_run ../shared/datasets/cats_dogs           # 3,000 photos, about 5 minutes
    python -m benchmarks.first_run ../shared/datasets/aerial --rounds 3   # medians of three rounds
    python -m benchmarks.first_run DATA --smoke                           # a few images (the test suite)

Every figure is measured here, in this run, beside its baseline:

- **the recipe**: ``python -m benchmarks.recipe`` (Keras' folder loader, ``model.predict``,
  a logistic-regression head), a whole process;
- **our first run**: ``python -m tl_core train DATA`` with the default settings and empty
  caches (the runtime choice of ``tl_core.runtime`` included), a whole process; also when its
  first model was saved (the ``model saved`` line), which is when a user has a model;
- **our second run**: the same command on the caches with another seed and learning rate;
- **the backbone**: MobileNetV2's forward pass on decoded images by Keras (TensorFlow,
  float32) and by ONNX Runtime, with the least cosine similarity of their features; in a
  child process each, and again with the CPU's instruction sets capped to AVX2 (no AVX-512,
  no VNNI, as on most laptops) by ``benchmarks/avx2_only.c`` where that can be built;
- **decoding**: JPEGs decoded at reduced size by the decoder (Pillow's draft mode) against a
  full decode, then the same resize, on the data's own files and on copies enlarged to
  4032x3024 (a phone's photo).

A folder with ``train/`` and ``val/`` is used as it is (both sides train on ``train/``
and are scored on ``val/``); any other folder of class folders is first split 80/20 per
class, seeded, into a copy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def split_folder(data: Path, work: Path, seed: int = 0, held_out: float = 0.2, limit: int | None = None) -> Path:
    """``data`` itself when it has ``train/`` and ``val/``; else a copy of its images split per class into ``train/`` and ``val/``."""
    if (data / "train").is_dir() and (data / "val").is_dir() and limit is None:
        return data
    target = work / "data"
    sources = [data / "train", data / "val"] if (data / "train").is_dir() else [data]
    classes = sorted({folder.name for source in sources for folder in source.iterdir() if folder.is_dir()})
    for name in classes:
        files = sorted(path for source in sources for path in (source / name).glob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
        random.Random(f"{seed}:{name}").shuffle(files)
        files = files[:limit] if limit else files
        count = max(1, round(len(files) * held_out))
        for index, path in enumerate(files):
            folder = target / ("val" if index < count else "train") / name
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, folder / f"{index:05d}_{path.name}")  # copies: the scan does not follow links out of the folder
    return target


def timed_process(command: list[str], environment: dict, marker: str | None = None) -> dict:
    """Runs ``command``; its wall seconds, its output, and when a line starting with ``marker`` first appeared."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment, cwd=REPO)
    lines, marked = [], None
    for line in process.stdout:
        lines.append(line)
        if marker and marked is None and line.startswith(marker):
            marked = time.perf_counter() - started
    code = process.wait()
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({code}):\n{''.join(lines[-30:])}")
    return {"seconds": round(seconds, 2), "marked_seconds": None if marked is None else round(marked, 2), "output": lines}


def run_recipe(data: Path, environment: dict, image_size: int) -> dict:
    result = timed_process([sys.executable, "-m", "benchmarks.recipe", str(data), "--image-size", str(image_size)], environment)
    report = json.loads(result["output"][-1])
    return {"seconds": result["seconds"], "accuracy": report["accuracy"], "held_out_images": report["held_out_images"], "steps": report["seconds"]}


def run_ours(data: Path, out: Path, cache: Path, environment: dict, *options: str) -> dict:
    command = [sys.executable, "-m", "tl_core", "train", str(data), "--out", str(out), "--cache-dir", str(cache), *options]
    result = timed_process(command, environment, marker="model saved:")
    from tl_core.runs.folder import read_report

    report = read_report(out)
    summary = report.summary
    return {
        "seconds": result["seconds"], "first_model_seconds": result["marked_seconds"], "accuracy": report.evaluation.accuracy,
        "held_out_images": report.evaluation.count, "phases": summary.seconds, "runtime": (summary.feature_runtime or {}).get("runtime"),
        "test_time_flip": summary.test_time_flip, "notes": [note for note in summary.notes if "mirror images" in note or "frozen backbone runs" in note],
    }


def backbone_speeds(data: Path, image_size: int, images: int) -> dict:
    """Images per second of the frozen MobileNetV2 by Keras and by ONNX Runtime on decoded images, and their features' agreement."""
    import numpy as np

    from tl_core.data.decoded import decode_images
    from tl_core.data.scan import scan_dataset
    from tl_core.features import compiled_forward, forward_batches
    from tl_core.models.backbones import get_backbone
    from tl_core.models.build import build_backbone, build_feature_model
    from tl_core.models.weights import weights_identity
    from tl_core.runtime import backbone_identity, cosine_similarities, instruction_sets, onnx_candidate

    work = Path(tempfile.mkdtemp(prefix="tl_core_backbone_"))
    try:
        records = scan_dataset(data).records[:images]
        pixels = np.asarray(decode_images(records, image_size, cache_dir=work).pixels)
        spec = get_backbone("mobilenet_v2")
        model = build_feature_model(spec, build_backbone(spec, "imagenet"), image_size)
        runtimes = {"keras": compiled_forward(model, image_size), "onnxruntime": onnx_candidate(model, backbone_identity(spec, weights_identity(spec, "imagenet"), image_size), work).make()}
        outputs = {name: forward_batches(forward, pixels[:64]) for name, forward in runtimes.items()}  # warm up
        speeds: dict[str, list[float]] = {name: [] for name in runtimes}
        for _ in range(3):  # taking turns, against drift of the machine
            for name, forward in runtimes.items():
                started = time.perf_counter()
                forward_batches(forward, pixels)
                speeds[name].append(len(pixels) / (time.perf_counter() - started))
        cosine = float(cosine_similarities(outputs["onnxruntime"], outputs["keras"]).min())
        return {"images_per_second": {name: round(statistics.median(values), 1) for name, values in speeds.items()}, "min_cosine": cosine, "instruction_sets": instruction_sets()}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def capped_library(work: Path) -> tuple[Path | None, str]:
    """``avx2_only.c`` built into a preloadable library, or None and why not."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if sys.platform != "linux" or os.uname().machine != "x86_64" or compiler is None:
        return None, "needs Linux on x86-64 and a C compiler"
    if "cpuid_fault" not in Path("/proc/cpuinfo").read_text():
        return None, "this CPU (or its virtual machine) cannot trap CPUID"
    library = work / "avx2_only.so"
    built = subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-o", str(library), str(REPO / "benchmarks" / "avx2_only.c")], capture_output=True, text=True)
    return (library, "") if built.returncode == 0 else (None, f"the C compiler failed: {built.stderr.strip()[:200]}")


def backbone_in_child(data: Path, image_size: int, images: int, environment: dict) -> dict:
    command = [sys.executable, "-m", "benchmarks.first_run", str(data), "--backbone-only", "--image-size", str(image_size), "--images", str(images)]
    return json.loads(timed_process(command, environment)["output"][-1])


def decoding(data: Path, image_size: int, files: int, work: Path) -> dict:
    """Seconds per JPEG decoded and resized: the decoder's reduced-size mode against a full decode; and the largest pixel difference."""
    import numpy as np
    from PIL import Image

    from tl_core.data.images import load_image

    jpegs = sorted(path for path in data.rglob("*") if path.suffix.lower() in (".jpg", ".jpeg"))[:files]
    if not jpegs:
        return {}
    phone = work / "phone"
    phone.mkdir(exist_ok=True)
    enlarged = []
    for index, path in enumerate(jpegs[: max(files // 5, 1)]):
        with Image.open(path) as picture:
            target = phone / f"{index}.jpg"
            picture.convert("RGB").resize((4032, 3024), Image.Resampling.BICUBIC).save(target, quality=90)
            enlarged.append(target)

    def full(path: Path, method=Image.Resampling.BILINEAR) -> np.ndarray:
        with Image.open(path) as picture:
            return np.asarray(picture.convert("RGB").resize((image_size, image_size), method))

    report = {}
    for name, paths in (("data", jpegs), ("phone_photos_4032x3024", enlarged)):
        seconds, pixels = {}, {}
        for label, decode in (("full_decode", full), ("reduced_decode", lambda path: load_image(path, image_size))):
            started = time.perf_counter()
            pixels[label] = [decode(path) for path in paths]
            seconds[label] = (time.perf_counter() - started) / len(paths)
        def mean_difference(first, second) -> float:
            return float(np.mean([np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() for a, b in zip(first, second, strict=True)]))

        lanczos = [full(path, Image.Resampling.LANCZOS) for path in paths]  # the yardstick: what another resize filter changes
        report[name] = {
            "files": len(paths), "ms_full_decode": round(1000 * seconds["full_decode"], 2), "ms_reduced_decode": round(1000 * seconds["reduced_decode"], 2),
            "speedup": round(seconds["full_decode"] / seconds["reduced_decode"], 2),
            "mean_pixel_difference": round(mean_difference(pixels["full_decode"], pixels["reduced_decode"]), 3),
            "bilinear_vs_lanczos_difference": round(mean_difference(pixels["full_decode"], lanczos), 3),
        }
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.first_run", description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--rounds", type=int, default=1, help="rounds of recipe / first run / second run, taking turns (default 1; medians)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--images", type=int, default=640, help="decoded images the backbone measurement runs on (default 640)")
    parser.add_argument("--smoke", action="store_true", help="a few images per class, every measurement (for tests)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--backbone-only", action="store_true", help=argparse.SUPPRESS)  # the child process of the backbone measurement
    arguments = parser.parse_args(argv)
    if arguments.backbone_only:
        print(json.dumps(backbone_speeds(arguments.data, arguments.image_size, arguments.images)))
        return 0
    if arguments.smoke:
        arguments.image_size, arguments.images = 64, 128
    work = Path(tempfile.mkdtemp(prefix="tl_core_first_run_"))
    try:
        results = measure(arguments, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(format_report(results))
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=2))
    return 0


def measure(arguments: argparse.Namespace, work: Path) -> dict:
    data = split_folder(arguments.data, work, limit=12 if arguments.smoke else None)
    environment = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO), "TL_CORE_EXPORT_FORMATS": ""}
    size = ["--image-size", str(arguments.image_size)]
    rounds = []
    for number in range(arguments.rounds):
        cache = work / f"cache_{number}"  # empty: the first run pays for decoding, the backbone and the runtime choice
        recipe = run_recipe(data, environment, arguments.image_size)
        first = run_ours(data, work / f"first_{number}", cache, {**environment, "TL_CORE_CACHE_DIR": str(cache)}, *size)
        second = run_ours(data, work / f"second_{number}", cache, {**environment, "TL_CORE_CACHE_DIR": str(cache)}, *size, "--seed", "1", "--learning-rate", "0.003")
        rounds.append({"recipe": recipe, "first": first, "second": second})
    backbone = {"this_cpu": backbone_in_child(data, arguments.image_size, arguments.images, environment)}
    library, why_not = capped_library(work)
    backbone["avx2_only"] = backbone_in_child(data, arguments.image_size, arguments.images, {**environment, "LD_PRELOAD": str(library)}) if library else {"not_measured": why_not}
    return {
        "data": str(arguments.data), "images": sum(1 for path in data.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES), "cpu_count": os.cpu_count(),
        "rounds": rounds, "backbone": backbone, "decoding": decoding(data, arguments.image_size, 30 if arguments.smoke else 300, work),
    }


def format_report(results: dict) -> str:
    """The figures beside their baselines, as the Markdown table of docs/benchmarks.md."""
    rounds = results["rounds"]

    def median(path: tuple[str, str]) -> float:
        return statistics.median(entry[path[0]][path[1]] for entry in rounds)

    recipe, first, second = median(("recipe", "seconds")), median(("first", "seconds")), median(("second", "seconds"))
    first_model = statistics.median(entry["first"]["first_model_seconds"] for entry in rounds)
    lines = [
        f"{results['data']}: {results['images']} images, {results['cpu_count']} CPU cores, {len(rounds)} round(s), whole processes (medians).",
        "",
        "| | seconds | vs the recipe | held-out accuracy |",
        "|---|---|---|---|",
        f"| the articles' recipe (folder loader, `model.predict`, logistic regression) | {recipe:.1f} | 1 | {median(('recipe', 'accuracy')):.4f} |",
        f"| our first run, default settings: the first model saved | {first_model:.1f} | {recipe / first_model:.2f}x | |",
        f"| our first run, default settings: the process ends | {first:.1f} | {recipe / first:.2f}x | {median(('first', 'accuracy')):.4f} |",
        f"| our second run (caches; other seed and learning rate) | {second:.1f} | {recipe / second:.2f}x | {median(('second', 'accuracy')):.4f} |",
        "",
        "| backbone (MobileNetV2, decoded images) | Keras (TensorFlow float32) | ONNX Runtime | ratio | least cosine |",
        "|---|---|---|---|---|",
    ]
    for name, figures in results["backbone"].items():
        if "not_measured" in figures:
            lines.append(f"| {name.replace('_', ' ')} | not measured: {figures['not_measured']} | | | |")
            continue
        speeds = figures["images_per_second"]
        lines.append(f"| {name.replace('_', ' ')} | {speeds['keras']:.0f} img/s | {speeds['onnxruntime']:.0f} img/s | {speeds['onnxruntime'] / speeds['keras']:.2f}x | {figures['min_cosine']:.6f} |")
    if results["decoding"]:
        lines += [
            "", "| JPEGs | full decode + resize | reduced-size decode + resize | ratio | mean pixel difference | bilinear vs Lanczos (yardstick) |", "|---|---|---|---|---|---|",
        ]
        for name, figures in results["decoding"].items():
            lines.append(
                f"| {name.replace('_', ' ')} ({figures['files']}) | {figures['ms_full_decode']} ms | {figures['ms_reduced_decode']} ms | {figures['speedup']}x "
                f"| {figures['mean_pixel_difference']} | {figures['bilinear_vs_lanczos_difference']} |"
            )
    lines += ["", "Notes of our first runs:"] + sorted({note for entry in rounds for note in entry["first"]["notes"]})
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
