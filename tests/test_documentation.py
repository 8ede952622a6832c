"""Every public HTTP operation and CLI command is documented (a feature without documentation fails here)."""

from __future__ import annotations

from typing import Any

import typer.main

from society5.cli.main import app as cli_app


def test_every_api_operation_has_a_summary(sqlite_platform: Any) -> None:
    from society5.core.service import discover
    from society5.web.app import create_app

    spec = create_app(sqlite_platform.settings, services=discover(), platform=sqlite_platform).openapi()
    assert any(path.startswith("/bears/") for path in spec["paths"])  # every installed service is in
    missing = [
        f"{method.upper()} {path}"
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if not (op.get("summary") or op.get("description"))
    ]
    assert not missing, missing
    # Clients generated from the schema name their methods by operationId: two alike would collide.
    ids = [op["operationId"] for ops in spec["paths"].values() for op in ops.values()]
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_every_cli_command_has_help() -> None:
    group = typer.main.get_command(cli_app)
    undocumented = []

    def walk(cmd: Any, prefix: str) -> None:
        for name, sub in getattr(cmd, "commands", {}).items():
            if not (sub.help or "").strip():
                undocumented.append(f"{prefix} {name}")
            walk(sub, f"{prefix} {name}")

    walk(group, "society5")
    assert not undocumented, undocumented
