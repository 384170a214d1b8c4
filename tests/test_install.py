"""scripts/install.sh on a copy of the repository, in a virtualenv that sees this machine's
packages: it keeps the installed torch, builds without ccache, and a second run recompiles
nothing. Slow (one full build of the extension)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _copy_repository(target: Path) -> None:
    """The tracked and untracked (not ignored) files, as CI's clean clone would have them."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    archive = target.parent / "repo.tar"
    with tarfile.open(archive, "w") as tar:
        for name in filter(None, listed):
            if (ROOT / name).exists():
                tar.add(ROOT / name, arcname=name)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="tar")


@pytest.mark.slow
def test_install_keeps_torch_builds_without_ccache_and_does_not_rebuild(tmp_path):
    repo = tmp_path / "repo"
    _copy_repository(repo)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    path = [p for p in os.environ["PATH"].split(os.pathsep) if "ccache" not in p]
    env = {**os.environ, "PATH": os.pathsep.join([str(venv / "bin"), *path])}
    env.pop("PYTHONPATH", None)

    def install() -> tuple[subprocess.CompletedProcess, float]:
        start = time.perf_counter()
        done = subprocess.run(
            ["bash", "scripts/install.sh"], cwd=repo, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done, time.perf_counter() - start

    first, first_seconds = install()
    assert "keeping the installed torch" in first.stdout
    assert not list(venv.glob("lib/python*/site-packages/torch")), "torch was reinstalled"
    objects = {p: p.stat().st_mtime_ns for p in (repo / "build").rglob("*.o")}
    assert objects, "no object files kept in build/"
    second, second_seconds = install()
    assert {p: p.stat().st_mtime_ns for p in objects} == objects, "objects were recompiled"
    assert "backend: cpu" in second.stdout
    print(f"install.sh: first run {first_seconds:.0f} s, second run {second_seconds:.0f} s")
