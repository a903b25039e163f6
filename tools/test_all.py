"""Run the whole test suite on every CPython >= 3.11 this machine has.

Usage: python3 tools/test_all.py [--list] [pytest arguments...]

Interpreters are found among pyenv's installed versions and python3.11 to
python3.14 on PATH, /usr/local/bin and /usr/bin, and kept one per minor
version (the highest patch release wins). Each runs the suite in its own
virtualenv, ``.venv-3.X``, whose dependencies are reinstalled only when
setup.cfg, setup.py or pyproject.toml changed. ``--list`` prints what would
run and exits. Exits non-zero when any version fails or none was found.

Only the standard library is used: this runs before any virtualenv exists.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MINORS = (11, 12, 13, 14)
EXTRAS = "test,browser"
PROBE = (
    "import sys, sysconfig, importlib.util as u;"
    "print(sys.implementation.name, '.'.join(map(str, sys.version_info[:3])),"
    " int(bool(sysconfig.get_config_var('Py_GIL_DISABLED'))),"
    " int(u.find_spec('ensurepip') is not None and u.find_spec('venv') is not None),"
    " sys.executable)"
)


@dataclass(frozen=True)
class Python:
    path: str
    version: tuple[int, int, int]
    has_venv: bool

    @property
    def minor(self) -> str:
        return f"{self.version[0]}.{self.version[1]}"

    @property
    def full(self) -> str:
        return ".".join(map(str, self.version))


def candidates() -> list[str]:
    """Paths worth probing, pyenv's first; duplicates are fine."""
    found: list[str] = []
    pyenv_root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    if shutil.which("pyenv"):
        out = subprocess.run(["pyenv", "root"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            pyenv_root = out.stdout.strip()
    found += sorted(glob.glob(os.path.join(pyenv_root, "versions", "*", "bin", "python3")))
    for minor in MINORS:
        name = f"python3.{minor}"
        found += [f"{d}/{name}" for d in ("/usr/local/bin", "/usr/bin")]
        on_path = shutil.which(name)
        if on_path:
            found.append(on_path)
    on_path = shutil.which("python3")
    if on_path:
        found.append(on_path)
    return found


def probe(path: str) -> Python | None:
    """The interpreter behind ``path`` (a pyenv shim resolves to its target), if usable."""
    if not os.access(path, os.X_OK):
        return None
    try:
        out = subprocess.run(
            [path, "-c", PROBE], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:  # e.g. a pyenv shim for a version that is not active
        return None
    impl, version, free_threaded, has_venv, executable = out.stdout.split(maxsplit=4)
    major, minor, micro = (int(part) for part in version.split("."))
    if impl != "cpython" or free_threaded == "1" or (major, minor) < (3, 11):
        return None
    return Python(os.path.realpath(executable.strip()), (major, minor, micro), has_venv == "1")


def discover() -> tuple[list[Python], list[str]]:
    """One interpreter per minor version, and notes on the ones left out."""
    seen: dict[str, Python] = {}
    for path in candidates():
        python = probe(path)
        if python is not None and python.path not in seen:
            seen[python.path] = python
    best: dict[str, Python] = {}
    for python in seen.values():
        current = best.get(python.minor)
        # A Debian interpreter without python3.X-venv can't make a virtualenv:
        # any other build of the same minor version is better.
        if current is None or (python.has_venv, python.version) > (
            current.has_venv,
            current.version,
        ):
            best[python.minor] = python
    notes = [
        f"{p.full} at {p.path}: not run, {best[p.minor].full} covers {p.minor}"
        for p in seen.values()
        if best[p.minor] is not p
    ]
    return sorted(best.values(), key=lambda p: p.version), notes


def ensure_venv_module(python: Python) -> bool:
    """Install Debian's python3.X-venv for a Debian interpreter that lacks it."""
    if python.has_venv:
        return True
    if not python.path.startswith("/usr/bin/") or not shutil.which("apt-get"):
        return False
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    for cmd in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", f"python{python.minor}-venv"],
    ):
        if subprocess.run([*sudo, *cmd], check=False).returncode != 0:
            return False
    return True


def run(cmd: list[str], **kwargs: object) -> None:
    print("+ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def prepare(python: Python) -> Path:
    """``.venv-3.X`` with the test and browser extras; reinstalled only when needed."""
    venv = ROOT / f".venv-{python.minor}"
    bin_python = venv / "bin" / "python"
    if bin_python.exists():
        check = subprocess.run(
            [str(bin_python), "-c", "import sys; print(sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if check.stdout.strip() != str(python.version[:2]):
            shutil.rmtree(venv)
    if not bin_python.exists():
        if not ensure_venv_module(python):
            raise RuntimeError(f"{python.path} has no venv module")
        run([python.path, "-m", "venv", str(venv)])
        run([str(bin_python), "-m", "pip", "install", "-q", "--upgrade", "pip"])
    stamp = venv / ".deps"
    inputs = [ROOT / name for name in ("setup.cfg", "setup.py", "pyproject.toml")]
    if not stamp.exists() or any(f.stat().st_mtime > stamp.stat().st_mtime for f in inputs):
        run([str(bin_python), "-m", "pip", "install", "-q", "-e", f".[{EXTRAS}]"], cwd=ROOT)
        stamp.touch()
    return bin_python


def pytest(bin_python: Path, args: list[str]) -> tuple[int, str]:
    """Run the suite, echoing its output; return the exit code and pytest's closing line."""
    cmd = [str(bin_python), "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    print("+ " + " ".join(cmd), flush=True)
    last = ""
    with subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            if line.strip():
                last = line.strip().strip("= ")
    return proc.returncode, last


def main(argv: list[str]) -> int:
    pythons, notes = discover()
    if argv[:1] == ["--list"]:
        for python in pythons:
            print(f"{python.full}\t{python.path}")
        for note in notes:
            print(f"# {note}")
        return 0 if pythons else 1
    if not pythons:
        print("test-all: no CPython >= 3.11 found", file=sys.stderr)
        return 1
    print("test-all: " + ", ".join(f"{p.full} ({p.path})" for p in pythons), flush=True)
    rows: list[tuple[Python, str, float, str]] = []
    for python in pythons:
        print(f"\n=== Python {python.full}: {python.path}", flush=True)
        start = time.monotonic()
        try:
            code, last = pytest(prepare(python), argv)
            result = "passed" if code == 0 else "FAILED"
            last = last if code == 0 else f"pytest exit {code}: {last}"
        except (subprocess.CalledProcessError, RuntimeError) as exc:
            result, last = "FAILED", f"set-up failed: {exc}"
        rows.append((python, result, time.monotonic() - start, last))

    print("\ntest-all summary: the whole suite on each Python")
    for python, result, seconds, last in rows:
        print(f"  {python.full:<8} {result:<6} {seconds:5.0f} s  {python.path}")
        print(f"  {'':<8} {last}")
    for note in notes:
        print(f"  ({note})")
    failed = [python.full for python, result, *_ in rows if result != "passed"]
    passed = [python.full for python, result, *_ in rows if result == "passed"]
    print(
        f"test-all: Python {', '.join(passed) or 'none'} passed"
        + (f"; {', '.join(failed)} failed" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
