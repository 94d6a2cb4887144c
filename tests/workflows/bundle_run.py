"""Running ``python -m monai.bundle run`` (alone or under torchrun) the way the workflow tests need it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_bundle(
    args: list[str], cwd: Path, expect: int = 0, torchrun: int = 0, timeout: int = 600, threads: str = "1"
) -> subprocess.CompletedProcess:
    """Run ``python -m monai.bundle run ARGS`` in ``cwd`` with this checkout first on ``PYTHONPATH``.

    Args:
        args: the run id and its options.
        cwd: working folder.
        expect: the exit status the run must end with (its log is shown when it does not).
        torchrun: number of local processes under ``torch.distributed.run`` (0: a plain process).
        timeout: seconds before the run is killed.
        threads: ``OMP_NUM_THREADS`` when the environment does not set it.

    Returns:
        the finished process (``stdout``, ``stderr`` as text).
    """
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.setdefault("OMP_NUM_THREADS", threads)
    head = [sys.executable, "-m", "monai.bundle", "run"]
    if torchrun:
        launcher = ["-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc_per_node={torchrun}"]
        head = [sys.executable, *launcher, "-m", "monai.bundle", "run"]
    proc = subprocess.run(head + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    assert proc.returncode == expect, f"exit {proc.returncode}, expected {expect}:\n{log[-8000:]}"
    return proc
