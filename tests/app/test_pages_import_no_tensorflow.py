"""Every page renders with a preset session (a dataset, a config, a finished run) without importing TensorFlow or Keras."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import REPO, make_class_folders

PAGES = ("data", "scenario", "setup", "train", "evaluate", "export")


def test_no_page_imports_tensorflow(tmp_path: Path) -> None:
    folder = make_class_folders(tmp_path / "data", {"a": 10, "b": 10, "c": 10})
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        sys.path[:0] = [{str(REPO)!r}, {str(REPO / "tests")!r}]
        from streamlit.testing.v1 import AppTest
        from fake_engine import FakeEngine, write_canned_run
        from tl_core.config import TrainConfig
        from tl_core.data.scan import scan_dataset
        at = AppTest.from_file({str(REPO / "app.py")!r}, default_timeout=30)
        at.session_state["engine"] = FakeEngine()
        at.session_state["dataset"] = scan_dataset({str(folder)!r})
        at.session_state["data_dir"] = {str(folder)!r}
        at.session_state["similarity"] = "low"
        at.session_state["chosen_strategy"] = "fine_tune"
        at.session_state["train_config"] = TrainConfig(data_dir={str(folder)!r}, out_dir="")
        at.session_state["run_dir"] = str(write_canned_run(Path({str(tmp_path / "run")!r}), ["a", "b", "c"]))
        at.run()
        for page in {PAGES!r}:
            at.switch_page(f"pages/{{page}}.py").run()
            assert not at.exception, (page, at.exception)
        print("tensorflow" in sys.modules, "keras" in sys.modules)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "False False"
