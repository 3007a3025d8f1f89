"""The layout holds: docs/architecture.md names every module, modules and functions stay readable, the engine has no import circle."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

ARCHITECTURE = REPO / "docs" / "architecture.md"
PACKAGES = ("tl_core", "ui", "benchmarks")
MAX_MODULE_LINES = 550
MAX_FUNCTION_LINES = 80
LONG_ON_PURPOSE = {("tl_core/cli/parser.py", "build_parser")}  # the argument table: one entry per option


def modules() -> list[Path]:
    return sorted(path for package in PACKAGES for path in (REPO / package).rglob("*.py") if "__pycache__" not in path.parts)


def test_the_architecture_page_names_every_module_and_no_other() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    named = {word.strip("`") for word in text.split() if word.strip("`|").endswith(".py") and "/" in word}
    on_disk = {path.relative_to(REPO).as_posix() for path in modules()}
    assert on_disk - named == set(), "modules the architecture page does not name: add a row for each"
    assert {name for name in named if name.split("/")[0] in PACKAGES} - on_disk == set(), "the architecture page names modules that do not exist"


def test_modules_and_functions_stay_readable() -> None:
    too_long = []
    for path in [*modules(), *(REPO / "pages").glob("*.py"), REPO / "app.py"]:
        source = path.read_text(encoding="utf-8")
        relative = path.relative_to(REPO).as_posix()
        if source.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{relative}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (relative, node.name) not in LONG_ON_PURPOSE:
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{relative}:{node.lineno} {node.name}: {length} lines")
    assert too_long == []


def module_imports(path: Path) -> set[str]:
    """The tl_core modules ``path`` imports when it is imported (imports inside functions happen later, when called)."""
    found = set()
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tl_core"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("tl_core"))
    return found


def test_the_engine_has_no_import_circle() -> None:
    names = {}
    for path in (REPO / "tl_core").rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {name: {imported for imported in module_imports(path) if imported in names and imported != name} for name, path in names.items()}

    def circle_from(start: str, path: list[str], seen: set[str]) -> list[str] | None:
        for following in sorted(graph[path[-1]]):
            if following == start:
                return [*path, start]
            if following not in seen:
                seen.add(following)
                found = circle_from(start, [*path, following], seen)
                if found:
                    return found
        return None

    circles = [circle for name in sorted(graph) if (circle := circle_from(name, [name], set()))]
    assert circles == []


def test_the_engine_never_imports_the_app() -> None:
    for path in (REPO / "tl_core").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        assert "import streamlit" not in source and "from streamlit" not in source and "from ui" not in source, path
