"""``python -m tl_core``: the command line (see ``tl_core.cli``)."""

import atexit
import os
import sys
import threading

from tl_core.cli import main


def _exit_now(code: int) -> None:
    """Ends the process once the command's work is done, without the interpreter's slow teardown.

    A process that imported TensorFlow spends 1.2-1.5 s after its last line of work
    tearing down hundreds of thousands of objects and TensorFlow's own state
    (measured on 2 cores, after a training run that took 5 s): a wait with nothing
    in it. Every file a command writes is complete and renamed into place before
    ``main`` returns; what would still run at exit runs here first: other threads
    that are not daemons are waited for, the exit handlers run (log handlers are
    flushed, temporary folders removed), and the output is flushed.
    """
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


if __name__ == "__main__":
    result = main()
    if "tensorflow" in sys.modules:
        _exit_now(int(result or 0))
    sys.exit(result)
