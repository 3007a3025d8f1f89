"""Step 6, Export and try: take the model files away, and try the model on new images.

The model files are offered as they are in the run folder; they are read
only when a download is clicked. Uploaded images are saved in this session's
folder by the engine (under a cleaned base name: a NUL byte or an over-long
name cannot break the page) and classified there.
"""

import streamlit as st

from tl_core.data.images import MAY_BE_TRANSPARENT, MORE_THAN_EIGHT_BITS, OVER_WHITE_READER, STANDALONE_READER
from tl_core.errors import TLError
from tl_core.runs.folder import DOWNLOAD_FILES, H5_FILE, KERAS_FILE, LABELS_FILE, METRICS_FILE, SUMMARY_FILE, RunFile
from tl_core.runs.portable import FORMAT_TITLES as PORTABLE_TITLES
from tl_core.runs.portable import FORMATS as PORTABLE_FORMATS
from tl_core.service.upload import format_bytes
from ui.charts import show_predictions

state = st.session_state
engine = state["engine"]
workspace = state["workspace"]

DESCRIPTIONS = {
    H5_FILE: ("The whole model in Keras' HDF5 format: loads with `keras.models.load_model`.", "application/octet-stream"),
    KERAS_FILE: ("The same model in the native Keras 3 format.", "application/octet-stream"),
    LABELS_FILE: ("Class names, in the order of the model's outputs.", "application/json"),
    SUMMARY_FILE: ("Run summary: settings, data fingerprint, timings, versions.", "application/json"),
    METRICS_FILE: ("Evaluation on held-out images and the training history.", "application/json"),
}
IMAGE_TYPES = ["jpg", "jpeg", "png", "bmp", "gif", "webp", "tif", "tiff", "heic", "heif", "avif"]

st.title("6 · Export and try")

run_dir = state["run_dir"]
if run_dir is None:
    st.info("No trained model yet. Train one first; its files can be downloaded and tried here.")
    st.page_link("pages/train.py", label="Go to Train", icon=":material/monitoring:")
    st.stop()

try:
    report = engine.load_report(run_dir)
except TLError as error:
    st.error(str(error))
    st.page_link("pages/train.py", label="Go to Train", icon=":material/monitoring:")
    st.stop()

files = engine.run_files(run_dir, [*DOWNLOAD_FILES, *PORTABLE_FORMATS.values()])
image_size = report.summary.input_size
middle = report.summary.image_size if image_size != report.summary.image_size else None  # a model with a centre crop keeps this middle
backbone = report.summary.display_name or "model"
st.markdown(
    f"**{backbone}**, {len(report.class_names)} classes ({', '.join(report.class_names[:8])}{', …' if len(report.class_names) > 8 else ''}), "
    f"accuracy **{report.evaluation.accuracy:.1%}** on {report.evaluation.count:,} held-out images, input {image_size}×{image_size} px"
    + (f" (the model keeps the middle {middle}×{middle} px itself, as it was trained)." if middle else ".")
)


def size_text(byte_count: int) -> str:
    """Bytes in words, in kB, MB and GB of 10^3, 10^6 and 10^9 bytes: "812 bytes", "14.0 kB", "9.1 MB"."""
    return format_bytes(byte_count)


def file_button(file: RunFile, mime: str, absent: str) -> bool:
    """A download button labelled with the file's name and size, or a disabled one saying ``absent``; True when the file is there."""
    if file.size is None:
        st.button(f"{file.name} · {absent}", disabled=True, key=f"download_{file.name}", width="stretch")
        return False
    # The bytes are read only when the button is clicked: model files can be hundreds of MB.
    st.download_button(
        f"{file.name} · {size_text(file.size)}", data=file.read, file_name=file.name, mime=mime,
        icon=":material/download:", on_click="ignore", key=f"download_{file.name}", width="stretch",
    )
    return True


# The run's images had more than 8 bits per pixel, or transparent areas: the snippets read them as training did
# (tl_core.data.images.eight_bit_values, deep_colour, to_rgb); Image.open(...).convert("RGB") would not.
modes = set((report.summary.data or {}).get("modes", {}))
deep = bool(modes & MORE_THAN_EIGHT_BITS)
READ_WHY = " and ".join(
    words for words, found in (
        ("more than 8 bits per pixel, which `read` stretches to 0-255", deep),
        ("transparent areas, which `read` lays over white", modes & MAY_BE_TRANSPARENT),
    ) if found
)
needs_read = bool(READ_WHY)
# Only deep images need the long reader; transparent ones alone get the few lines that lay them over white.
READER = "\n\n" + (STANDALONE_READER if deep else OVER_WHITE_READER) + "\n" if needs_read else "\n"
OPEN = f'{"read" if needs_read else "Image.open"}("photo.jpg").convert("RGB").resize(({image_size}, {image_size}), Image.Resampling.BILINEAR)'  # as training resized

st.subheader("Download")
# The two model files in a row, the three reports in the next: five in one row cut their labels short ("model.keras · 31.9 …").
for row in (DOWNLOAD_FILES[:2], DOWNLOAD_FILES[2:]):
    for column, name in zip(st.columns(len(row)), row, strict=True):
        description, mime = DESCRIPTIONS[name]
        with column:
            file_button(files[name], mime, "missing")
            st.caption(description)

st.markdown(
    f"The model takes **RGB images with values 0-255, resized to {image_size}×{image_size}** (its preprocessing is built in), "
    "and returns one probability per class in the order of `labels.json`. It loads in plain Python with only Keras installed"
    + (f". Your images may have {READ_WHY}, as training did:" if needs_read else ":")
)
st.code(
    f"""import json
import keras
import numpy as np
from PIL import Image{READER}
model = keras.models.load_model("model.h5", compile=False)
labels = json.load(open("labels.json"))
image = {OPEN}
probabilities = model.predict(np.asarray(image, dtype="float32")[None])[0]
print(labels[probabilities.argmax()], f"{{probabilities.max():.0%}}")""",
    language="python",
)

st.subheader("Run it without Keras")
st.markdown(
    "The same model for phones and small devices (**TensorFlow Lite**) and for servers and other languages (**ONNX**). "
    f"Same input (RGB 0-255, {image_size}×{image_size}, preprocessing inside) and output. They are made when you ask "
    "(training does not wait for them): each file is run by its own runtime on held-out images and compared with the "
    "Keras model before it is kept."
)
exports = report.summary.exports or {}
missing = []
for name, file in PORTABLE_FORMATS.items():
    check = exports.get(name, {})
    file_column, check_column = st.columns([1, 3], vertical_alignment="center")
    with file_column:
        if not file_button(files[file], "application/octet-stream", "not made"):
            missing.append(name)
    with check_column:
        title = f"**{PORTABLE_TITLES[name]}**"
        if files[file].size is not None and check.get("ok"):
            st.markdown(f"{title}: {check['message']}")
        elif check and not check.get("ok"):
            st.markdown(f"{title}: :orange[{check['message']}]")
        else:
            st.markdown(f"{title}: not made yet" + (" (8-bit weights: about 4x smaller, the same top class on nearly every image)." if name == "int8" else "."))
if missing:
    make = st.button(
        f"Make {', '.join(PORTABLE_FORMATS[name] for name in missing)}", icon=":material/build:", key="export_make",
        help="Converts the model and checks each file on the run's held-out images; takes about ten seconds per file on a CPU.",
    )
    if make:
        try:
            with st.spinner("Converting and checking…"):
                engine.export_portable(run_dir, missing)
        except TLError as error:
            st.error(str(error))
        else:
            st.rerun()  # the files made, and beside each one that was not kept, why (run.json keeps every check)

lite_tab, onnx_tab, mobile_tab = st.tabs(["LiteRT (Python)", "ONNX Runtime (Python)", "Android and iOS"])
with lite_tab:
    st.code(
        f"""# pip install ai-edge-litert numpy pillow
import json
import numpy as np
from PIL import Image
from ai_edge_litert.interpreter import Interpreter{READER}
interpreter = Interpreter(model_path="model.tflite")
interpreter.allocate_tensors()
labels = json.load(open("labels.json"))
image = {OPEN}
interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.asarray(image, dtype="float32")[None])
interpreter.invoke()
probabilities = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0]
print(labels[probabilities.argmax()], f"{{probabilities.max():.0%}}")""",
        language="python",
    )
with onnx_tab:
    st.code(
        f"""# pip install onnxruntime numpy pillow
import json
import numpy as np
import onnxruntime
from PIL import Image{READER}
session = onnxruntime.InferenceSession("model.onnx")
labels = json.load(open("labels.json"))
image = {OPEN}
probabilities = session.run(None, {{"image": np.asarray(image, dtype="float32")[None]}})[0][0]
print(labels[probabilities.argmax()], f"{{probabilities.max():.0%}}")""",
        language="python",
    )
with mobile_tab:
    st.markdown(
        f"Put `model.tflite` (or the smaller `model_int8.tflite`) and `labels.json` in the app's assets and run it with "
        f"**LiteRT** (`com.google.ai.edge.litert` on Android, the `TensorFlowLiteSwift` pod on iOS). Feed one "
        f"{image_size}×{image_size}×3 float32 buffer of RGB values 0-255, in rows from the top left (no scaling: the model does it); "
        "the output is one probability per class in the order of `labels.json`. ONNX Runtime Mobile runs `model.onnx` the same way."
    )

st.subheader("Try the model")
uploads = st.file_uploader(
    "Images the model has not seen", type=IMAGE_TYPES, accept_multiple_files=True, key="try_uploads",
    help="They are saved in this session's private folder only, and replaced by the next upload.",
)
if not uploads:
    st.caption("Upload one or more photos to see the classes the model gives them, with its confidence.")
else:
    signature = (str(run_dir), tuple(upload.file_id for upload in uploads))
    cached = state.get("try_results")
    if cached is None or cached[0] != signature:
        try:
            paths, names = engine.save_tried_images(workspace, [(upload.name, upload.getvalue()) for upload in uploads])
            with st.spinner(f"Loading the model and classifying {len(paths)} image{'s' if len(paths) != 1 else ''}…"):
                predictions = engine.predict(run_dir, paths, top_k=3)
            state["try_results"] = (signature, predictions, engine.thumbnails(paths, size=160), names)
        except TLError as error:
            st.error(str(error))
            state["try_results"] = None
    if state.get("try_results"):
        _, predictions, previews, names = state["try_results"]
        show_predictions(predictions, previews, names)
        readable = [(prediction, name) for prediction, name in zip(predictions, names, strict=True) if not prediction.error]
        if readable and st.toggle(
            "Show where the model looked", key="export_maps",
            help="Grad-CAM: the regions that raised the probability of the predicted class, from the gradients at the backbone's feature maps.",
        ):
            try:
                with st.spinner("Computing attention maps…"):
                    maps = engine.attention_maps(run_dir, [prediction.path for prediction, _ in readable], [prediction.predicted_class for prediction, _ in readable])
            except TLError as error:
                st.error(str(error))
            else:
                for start in range(0, len(readable), 4):
                    for column, picture, (prediction, name) in zip(st.columns(4), maps[start : start + 4], readable[start : start + 4], strict=False):
                        if picture is not None:
                            column.image(picture, caption=f"{name}: what speaks for '{prediction.predicted_class}'")

st.page_link("pages/data.py", label="Start over with other data", icon=":material/restart_alt:")
