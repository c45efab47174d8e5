"""ARCHITECTURE.md's rooms table is held against the code: each module imports from the
exporter only the rooms its row allows, and every module has a row.

Mutation: an import across rooms (say `from ..metrics import Exposition` in api/session.py,
or the simulator importing the client) without a new row in ARCHITECTURE.md fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "exporter"


def _rooms() -> dict[str, set[str] | None]:
    """Module path (as in the table: `api/session.py`, `simulator/`) -> allowed rooms; None: any."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    table = text[text.index("| module | holds | may import |") :]
    rooms: dict[str, set[str] | None] = {}
    for line in table.splitlines()[2:]:
        if not line.startswith("|"):
            break
        modules, _, allowed = (cell.strip() for cell in line.strip("|").split("|"))
        names = set(re.findall(r"`([^`]+)`", allowed))
        for module in re.findall(r"`([^`]+)`", modules):
            rooms[module] = None if "everything above" in allowed else names
    return rooms


def _room_of(module: str, rooms: dict[str, set[str] | None]) -> str:
    """`api/session.py` for exporter/api/session.py; `simulator/` for any of that package."""
    for room in rooms:
        if module == room or (room.endswith("/") and module.startswith(room)):
            return room
    raise AssertionError(f"exporter/{module} has no row in ARCHITECTURE.md's rooms table")


def _imported(path: Path) -> set[str]:
    """Dotted exporter modules that `path` imports (`api.session`, `config`, ...)."""
    here = path.relative_to(PACKAGE).with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = list(here[: len(here) - node.level + 1])
            target = base + (node.module.split(".") if node.module else [])
            if node.module:
                found.add(".".join(target))
            else:  # from . import x, y; the package's own __version__ is no room
                found.update(".".join([*target, alias.name]) for alias in node.names if not alias.name.startswith("__"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("exporter."):
            found.add(node.module.removeprefix("exporter."))
    return found


def _allowed(imported: str, allowed: set[str]) -> bool:
    for name in allowed:
        room = name.removesuffix(".*").removesuffix(".py").replace("/", ".")
        if imported == room or imported.startswith(room + "."):
            return True
    return False


def test_every_module_imports_only_the_rooms_its_row_allows():
    rooms = _rooms()
    assert len(rooms) > 20
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = path.relative_to(PACKAGE).as_posix()
        if path.name in ("__init__.py", "__main__.py"):
            continue
        allowed = rooms[_room_of(module, rooms)]
        if allowed is None:
            continue
        for imported in _imported(path):
            if not _allowed(imported, allowed):
                wrong.append(f"exporter/{module} imports {imported}")
    assert not wrong, "imports that ARCHITECTURE.md does not allow:\n" + "\n".join(wrong)
