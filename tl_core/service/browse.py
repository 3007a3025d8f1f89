"""List the folders on this computer with how many images each holds, for the Data page's folder browser.

The app runs on the user's own machine, so the fastest way to use a large
dataset is to read it where it lies. Browsing starts at the user's home, or
at ``$TL_CORE_BROWSE_ROOT``, and never goes above that root. Images are
counted by their extension (fast; the scan later checks every file's
content), hidden folders are passed over, and counting stops after a budget
of directory entries so that a huge tree cannot stall the page: such a count
is shown as "at least".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tl_core.data.records import is_system_file

BROWSE_ROOT_VARIABLE = "TL_CORE_BROWSE_ROOT"
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".jfif", ".pgm", ".ppm", ".heic", ".heif", ".avif"})
# Directory entries looked at for one listing, across all its sub-folders.
DEFAULT_ENTRY_BUDGET = 200_000


def browse_root() -> Path:
    """``$TL_CORE_BROWSE_ROOT`` if set, else the user's home folder."""
    return Path(os.environ.get(BROWSE_ROOT_VARIABLE) or Path.home()).expanduser().resolve()


@dataclass(frozen=True)
class FolderEntry:
    """A sub-folder: its name and path, images under it, and its own sub-folders."""

    name: str
    path: Path
    images: int
    folders: int
    complete: bool  # False when counting stopped at the budget: ``images`` is then a lower bound

    def images_text(self) -> str:
        return f"{self.images:,}" if self.complete else f"at least {self.images:,}"


@dataclass(frozen=True)
class FolderListing:
    """A folder's sub-folders (sorted by name) and the images under the folder as a whole."""

    folder: Path
    entries: list[FolderEntry]
    images: int
    complete: bool

    def summary(self) -> str:
        count = f"{self.images:,}" if self.complete else f"at least {self.images:,}"
        return f"{count} image{'s' if self.images != 1 else ''} in {len(self.entries):,} sub-folder{'s' if len(self.entries) != 1 else ''}"


def list_folders(folder: Path, root: Path | None = None, entry_budget: int = DEFAULT_ENTRY_BUDGET) -> FolderListing:
    """The visible sub-folders of ``folder`` with their image counts.

    A ``folder`` outside ``root`` (or one that no longer exists) is replaced by
    ``root``, so the browser can never be steered above its root.
    """
    root = (root or browse_root()).resolve()
    folder = Path(folder).resolve()
    if not folder.is_dir() or not folder.is_relative_to(root):
        folder = root
    budget = [entry_budget]
    entries = []
    images_here = 0
    for child in _visible_entries(folder, budget):
        if child.is_dir(follow_symlinks=False):
            images, complete = _count_images(Path(child.path), budget)
            entries.append(FolderEntry(child.name, Path(child.path), images, _count_folders(Path(child.path)), complete))
        elif Path(child.name).suffix.lower() in IMAGE_EXTENSIONS:
            images_here += 1
    entries.sort(key=lambda entry: entry.name.lower())
    total = images_here + sum(entry.images for entry in entries)
    return FolderListing(folder, entries, total, all(entry.complete for entry in entries) and budget[0] > 0)


def _visible_entries(folder: Path, budget: list[int]) -> list[os.DirEntry]:
    try:
        with os.scandir(folder) as scanner:
            found = [entry for entry in scanner if not is_system_file(entry.name)]
    except OSError:
        return []  # unreadable (no permission): listed as empty rather than failing the page
    budget[0] -= len(found)
    return found


def _count_images(folder: Path, budget: list[int]) -> tuple[int, bool]:
    """Images under ``folder`` by extension, and whether the count finished within the budget."""
    images = 0
    pending = [folder]
    while pending:
        if budget[0] <= 0:
            return images, False
        for entry in _visible_entries(pending.pop(), budget):
            if entry.is_dir(follow_symlinks=False):
                pending.append(Path(entry.path))
            elif Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
                images += 1
    return images, True


def _count_folders(folder: Path) -> int:
    try:
        with os.scandir(folder) as scanner:
            return sum(1 for entry in scanner if not is_system_file(entry.name) and entry.is_dir(follow_symlinks=False))
    except OSError:
        return 0
