#!/usr/bin/env python3
"""The project's commands, on a machine with nothing but Python 3.11+.

    python3 dev.py demo          # .venv at the locked versions, then the end-to-end demo
    python3 dev.py test          # .venv, then ruff, mypy and every test (what CI runs)
    python3 dev.py test --unit   # the fast loop: ruff, mypy and the in-process tests
    python3 dev.py bench         # the benchmarks beside the tutorial-style handler
    python3 dev.py lock          # re-resolve requirements.lock: upgrades happen on purpose

`demo` and `test --unit` need nothing installed. The full `test` needs redis-server,
PostgreSQL on 127.0.0.1:5432 trusting the user `postgres`, RabbitMQ (its story runs on a
vhost of its own), Debian's chromium at
/usr/bin/chromium (the live page's browser tests), and root (the fault suite runs its own
PostgreSQL as that user); it says in one line what is missing. Anything after the
command goes to pytest (`python3 dev.py test --unit -k signing`) or bench/run.py.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
LOCK = ROOT / "requirements.lock"
LOCK_HEADER = """\
# The exact versions CI, the demo and the bench install (as pip constraints).
# Regenerate on purpose with `python3 dev.py lock`; commit it with what it changes.
"""


def ensure_venv(extras: str) -> None:
    """Create .venv and install the project (editable) at the locked versions, once per
    change of pyproject.toml or the lock."""
    if not (BIN / "python").exists():
        print("creating .venv ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    recipe = (ROOT / "pyproject.toml").read_bytes() + LOCK.read_bytes() + extras.encode()
    stamp = VENV / f".installed-{hashlib.sha256(recipe).hexdigest()[:16]}"
    if stamp.exists():
        return
    print(f"installing ittybit-pipeline{extras} into .venv (once) ...", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # compat mode puts the project root on sys.path, so a `listeners/` directory elsewhere on
    # PYTHONPATH extends the built-in package instead of hiding it.
    editable = ["--config-settings", "editable_mode=compat", "-e", f".{extras}"]
    subprocess.run([*pip, "-c", str(LOCK), *editable], cwd=ROOT, check=True)
    stamp.touch()


def missing_for_full_suite() -> list[str]:
    """What the integration and fault suites need that this machine lacks."""
    missing = []
    if not shutil.which("redis-server"):
        missing.append("redis-server on PATH (Debian: apt-get install redis-server)")
    rabbit = shutil.which("rabbitmqctl")
    if not rabbit or subprocess.run([rabbit, "-q", "status"], capture_output=True).returncode:
        missing.append("RabbitMQ answering `rabbitmqctl status` (Debian: rabbitmq-server)")
    if not os.access("/usr/bin/chromium", os.X_OK):
        missing.append("/usr/bin/chromium (Debian: apt-get install chromium)")
    reach = [
        str(BIN / "python"),
        "-c",
        "import psycopg; psycopg.connect("
        + "'postgresql://postgres@127.0.0.1:5432/postgres', connect_timeout=3).close()",
    ]
    if subprocess.run(reach, capture_output=True).returncode != 0:
        missing.append("PostgreSQL on 127.0.0.1:5432 trusting the user postgres")
    if os.geteuid() != 0:
        missing.append("root (the fault suite runs its own PostgreSQL as the user postgres)")
    else:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            missing.append("an OS user `postgres` (the fault suite's own PostgreSQL runs as it)")
        if not shutil.which("initdb"):
            missing.append("initdb on PATH (PostgreSQL's server binaries)")
    return missing


def run(*argv: str) -> int:
    print("$", " ".join(argv), flush=True)
    return subprocess.run(argv, cwd=ROOT).returncode


def test(args: list[str]) -> int:
    unit = "--unit" in args
    args = [a for a in args if a != "--unit"]
    ensure_venv("[test]")
    if not unit:
        missing = missing_for_full_suite()
        if missing:
            print(
                f"error: the full test suite needs {'; '.join(missing)}. "
                "`python3 dev.py test --unit` runs the in-process tests without them.",
                file=sys.stderr,
            )
            return 1
    for check in (["ruff", "check", "."], ["ruff", "format", "--check", "."], ["mypy"]):
        if run(str(BIN / check[0]), *check[1:]) != 0:
            return 1
    where = ["tests/unit"] if unit else ["-m", ""]  # "": the soak too, which pytest skips
    coverage = ["--cov", "--cov-report=term"]
    return run(str(BIN / "pytest"), *where, *coverage, *args)


def lock() -> int:
    ensure_venv("[test]")
    run(str(BIN / "python"), "-m", "pip", "install", "--quiet", "uv")
    compile_ = [
        str(BIN / "uv"),
        "pip",
        "compile",
        "pyproject.toml",
        "--extra",
        "test",
        "--universal",
        "--python-version",
        "3.11",
        "--no-header",
        "--annotation-style",
        "line",
        "--upgrade",
        "-o",
        str(LOCK),
    ]
    if run(*compile_) != 0:
        return 1
    LOCK.write_text(LOCK_HEADER + LOCK.read_text())
    return 0


def main(args: list[str]) -> int:
    command, rest = (args[0], args[1:]) if args else ("", [])
    if command == "demo":
        ensure_venv("")
        return run(str(BIN / "pipeline"), "demo", *rest)
    if command == "test":
        return test(rest)
    if command == "bench":
        ensure_venv("[test]")
        return run(str(BIN / "python"), "bench/run.py", *rest)
    if command == "lock":
        return lock()
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
