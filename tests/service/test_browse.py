"""The Data page's folder browser: sub-folders with image counts, hidden folders skipped, a bounded count."""

from __future__ import annotations

from pathlib import Path

from tl_core.service.browse import browse_root, list_folders


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_sub_folders_are_listed_with_their_image_counts(tmp_path: Path) -> None:
    for index in range(3):
        _touch(tmp_path / "photos" / "train" / "cats" / f"{index}.jpg")
    _touch(tmp_path / "photos" / "train" / "dogs" / "1.PNG")
    _touch(tmp_path / "photos" / "notes.txt")
    _touch(tmp_path / "photos" / ".hidden" / "9.jpg")
    _touch(tmp_path / "Documents" / "letter.pdf")
    _touch(tmp_path / ".cache" / "x.jpg")
    listing = list_folders(tmp_path, tmp_path)
    assert [(entry.name, entry.images, entry.folders) for entry in listing.entries] == [("Documents", 0, 0), ("photos", 4, 1)]
    assert listing.summary() == "4 images in 2 sub-folders"


def test_a_huge_tree_is_counted_up_to_a_budget(tmp_path: Path) -> None:
    for index in range(50):
        _touch(tmp_path / "big" / f"part_{index // 5}" / f"{index}.jpg")
    entry = list_folders(tmp_path, tmp_path, entry_budget=20).entries[0]
    assert not entry.complete and entry.images_text().startswith("at least ")


def test_the_browser_never_leaves_its_root(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "root" / "inside").mkdir(parents=True)
    assert list_folders(tmp_path, tmp_path / "root").folder == (tmp_path / "root").resolve()
    assert list_folders(tmp_path / "root" / "missing", tmp_path / "root").folder == (tmp_path / "root").resolve()
    monkeypatch.setenv("TL_CORE_BROWSE_ROOT", str(tmp_path / "root"))
    assert browse_root() == (tmp_path / "root").resolve()
