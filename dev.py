#!/usr/bin/env python3
"""The project's two commands, on a machine with nothing but Python 3.11+.

    python3 dev.py demo   # set up .venv, then run the end-to-end demo (embedded defaults)
    python3 dev.py test   # set up .venv, start Redis/PostgreSQL if installed but stopped,
                          # then ruff, mypy and the whole pytest suite
    python3 dev.py bench  # the benchmarks beside the tutorial-style handler (bench/README.md)

Anything after the command is passed on (`python3 dev.py test -k signing`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")


def ensure_venv(extras: str) -> None:
    """Create .venv and install the project (editable) once per pyproject.toml change."""
    if not (BIN / "python").exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    recipe = (ROOT / "pyproject.toml").read_bytes() + extras.encode()
    stamp = VENV / f".installed-{hashlib.sha256(recipe).hexdigest()[:16]}"
    if stamp.exists():
        return
    print(f"installing ittybit-pipeline{extras} into .venv (once) ...", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # compat mode puts the project root on sys.path, so a `listeners/` directory elsewhere on
    # PYTHONPATH extends the built-in package instead of hiding it.
    editable = ["--config-settings", "editable_mode=compat", "-e", f".{extras}"]
    subprocess.run([*pip, *editable], cwd=ROOT, check=True)
    stamp.touch()


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def ensure_services() -> None:
    """Start the machine's Redis and PostgreSQL when they are installed but not running."""
    if not port_open(6379) and shutil.which("redis-server"):
        print("starting redis-server on 127.0.0.1:6379", flush=True)
        Path("/var/lib/redis").mkdir(parents=True, exist_ok=True)
        Path("/var/log/redis").mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "-::1", "--port", "6379",
             "--save", "", "--appendonly", "no", "--dir", "/var/lib/redis",
             "--logfile", "/var/log/redis/ci.log"],
            check=False,
        )  # fmt: skip
    clusters = Path("/etc/postgresql")
    if not port_open(5432) and shutil.which("pg_ctlcluster") and clusters.is_dir():
        for version in sorted(p.name for p in clusters.iterdir()):
            print(f"starting PostgreSQL {version} on 127.0.0.1:5432", flush=True)
            start = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"]
            subprocess.run(start, check=False)


def run(*argv: str) -> int:
    print("$", " ".join(argv), flush=True)
    return subprocess.run(argv, cwd=ROOT).returncode


def main(args: list[str]) -> int:
    command, rest = (args[0], args[1:]) if args else ("", [])
    if command == "demo":
        ensure_venv("")
        return run(str(BIN / "pipeline"), "demo", *rest)
    if command == "test":
        ensure_venv("[test]")
        ensure_services()
        for check in (
            [str(BIN / "ruff"), "check", "."],
            [str(BIN / "ruff"), "format", "--check", "."],
            [str(BIN / "mypy")],
        ):
            if run(*check) != 0:
                return 1
        return run(str(BIN / "pytest"), *rest)
    if command == "bench":
        ensure_venv("[test]")
        ensure_services()
        return run(str(BIN / "python"), "bench/run.py", *rest)
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
