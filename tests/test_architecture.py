"""The package layering of DESIGN.md holds: lower layers never import higher ones, services not each other."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "society5"
ALLOWED = {
    "core": {"core"},
    "broker": {"core", "broker"},
    "notify": {"core", "notify"},
    "opendata": {"core", "opendata"},
    "services": {"core", "broker", "notify", "opendata"},
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m.startswith("society5.")}


def test_layers_import_only_what_they_may() -> None:
    problems = []
    for layer, allowed in ALLOWED.items():
        for path in (SRC / layer).rglob("*.py"):
            rel = path.relative_to(SRC)
            for mod in _imports(path):
                target = mod.split(".")[1]
                if layer == "services":
                    own = rel.parts[1] if len(rel.parts) > 2 else None
                    if target == "services" and own and mod.split(".")[2:3] != [own]:
                        problems.append(f"{rel} imports another service: {mod}")
                    elif target not in allowed | {"services"}:
                        problems.append(f"{rel} imports {mod}")
                elif target not in allowed:
                    problems.append(f"{rel} imports {mod}")
    assert not problems, "\n".join(problems)


def test_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from society5.web.app import create_app\n", encoding="utf-8")
    assert _imports(bad) == {"society5.web.app"}
