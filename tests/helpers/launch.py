"""Child processes of the tests: the environment they run in, torchrun launches, and killing a
launch with every rank under it.

Every multi-process test launches through torchrun() or start_torchrun() here: one command line,
one environment, one timeout policy (a launch that times out is killed with its ranks, which
torchrun starts in sessions of their own). A launch from a test not marked `multiprocess` fails
(tests/conftest.py tells this module which test is running), so no such test runs in the fast tier.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import ROOT

STANDALONE = ("--standalone",)
running_test = None  # the pytest item being set up or run (tests/conftest.py sets it)


def project_env(**extra: str) -> dict[str, str]:
    """This environment for a child of this checkout: the checkout first on PYTHONPATH, one OpenMP
    thread (a busy 2-core machine runs two spinning threads per process ~10x slower), no Spark
    gateway of this process's SparkSession (a child's PySpark would join that JVM)."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, **extra}
    env.pop("PYSPARK_GATEWAY_PORT", None)
    return env


def start_torchrun(nproc: int, args: list[str], launcher=STANDALONE, env: dict | None = None,
                   **popen) -> subprocess.Popen:
    """`python -m torch.distributed.run LAUNCHER --nproc_per_node=NPROC ARGS` from the checkout's
    root, started; args name what each rank runs (`-m module key=value ...` or a script)."""
    if running_test is not None and running_test.get_closest_marker("multiprocess") is None:
        raise AssertionError(f"{running_test.nodeid} launches torchrun: mark it @pytest.mark.multiprocess")
    cmd = [sys.executable, "-m", "torch.distributed.run", *launcher, f"--nproc_per_node={nproc}", *args]
    return subprocess.Popen(cmd, cwd=ROOT, env=project_env() if env is None else env, **popen)


def torchrun(nproc: int, args: list[str], launcher=STANDALONE, env: dict | None = None,
             timeout: float = 600) -> subprocess.CompletedProcess:
    """A torchrun to its end (stdout and stderr captured as text); on a timeout, it and its ranks
    are killed and TimeoutExpired is raised."""
    p = start_torchrun(nproc, args, launcher, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(p)
        raise
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def kill_tree(p: subprocess.Popen) -> None:
    """SIGKILL a torchrun and every process under it at once, and wait until they are gone.
    torchrun starts each rank in a session of its own: killing the agent's process group would
    leave the ranks running, finishing the "killed" run behind the test's back."""
    import psutil

    try:
        root = psutil.Process(p.pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:  # already gone (and reaped)
        return
    for q in procs:
        try:
            q.kill()
        except psutil.NoSuchProcess:
            pass
    p.wait()
    _, alive = psutil.wait_procs(procs, timeout=60)
    assert not alive, alive


def kill_when(p: subprocess.Popen, path: Path, timeout: float = 300) -> None:
    """SIGKILL torchrun `p` and its ranks (kill_tree) once `path` exists (a checkpoint), or after
    `timeout` seconds."""
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and not path.exists():
            time.sleep(0.05)
    finally:
        kill_tree(p)
