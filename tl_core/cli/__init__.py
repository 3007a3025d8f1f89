"""Command line: everything the app does, scriptable.

    python -m tl_core inspect DATA
    python -m tl_core train DATA --out RUN_DIR [options]
    python -m tl_core evaluate RUN_DIR DATA
    python -m tl_core predict RUN_DIR IMAGE [IMAGE ...]
    python -m tl_core export RUN_DIR --format tflite|int8|onnx [...]
    python -m tl_core runs [--json]
    python -m tl_core explain RUN_DIR IMAGE [--class NAME] --out map.png
    python -m tl_core label-issues DATA [--json] [--report FILE]
    python -m tl_core label-decide DATA --exclude PATH --relabel PATH=CLASS --keep PATH --forget PATH
    python -m tl_core advise DATA
    python -m tl_core compare DATA
    python -m tl_core backbones

A problem the user can fix ends the command with one line on stderr that
names the problem and the fix, and exit status 2. No traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Sequence

from tl_core.errors import TLError

EXIT_USER_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    from tl_core.cli.parser import build_parser

    parser = build_parser()
    arguments = parser.parse_args(argv)
    _quiet_tensorflow()
    try:
        if getattr(arguments, "uses_keras", False):
            from tl_core.backend import select_backend

            select_backend(arguments.backend)  # before Keras is imported: the command's own process runs on it
        return arguments.handler(arguments)
    except TLError as error:
        print(f"error: {error}{_command_line_hint(error)}", file=sys.stderr)
        return EXIT_USER_ERROR


def _command_line_hint(error: TLError) -> str:
    """What only the command line can do about an error (``error.command_line``): the engine's own messages name no option, since the app shows them too."""
    return f" {error.command_line}" if error.command_line else ""


def _quiet_tensorflow() -> None:
    """Keeps TensorFlow's start-up chatter and Keras' internal warnings off the terminal (set before TensorFlow is imported)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    warnings.filterwarnings("ignore", category=UserWarning, module=r"keras(\..*)?$")
    # Small models (the head, the probes) each get their own predict function: TensorFlow then warns of "retracing",
    # which costs milliseconds here and reads like a fault.
    logging.getLogger("tensorflow").addFilter(_not_retracing)  # the same function each time: added once, however often main runs


def _not_retracing(record: logging.LogRecord) -> bool:
    return "triggered tf.function retracing" not in record.getMessage()
