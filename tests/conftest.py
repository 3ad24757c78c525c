import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Torch in the test process on one intra-op thread, as OMP_NUM_THREADS=1 gives the torchrun
    tests' ranks: on a busy 2-core machine, two spinning OpenMP threads make a step ~10x slower."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def wn():
    from pipeline.wordnet import load_wordnet

    return load_wordnet()


@pytest.fixture(scope="session")
def spark():
    from jobs.lib.session import get_session

    s = get_session("tests", "local[2]", {"spark.sql.shuffle.partitions": "4",
                                          "spark.default.parallelism": "4",
                                          "spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false",
                                          "spark.driver.memory": "2g"})
    yield s
    s.stop()


@pytest.fixture(scope="session")
def python_without_project(tmp_path_factory):
    """An interpreter with the project's dependencies but not the project, like a cluster's.

    A venv (no pip) whose one addition is a .pth line naming this environment's site-packages:
    Python puts that directory on sys.path but runs no .pth file inside it, so the finder that
    `pip install -e .` installs there (a .pth hook) never loads. Run from a directory outside
    the checkout with PYTHONPATH unset, `import trainer` fails in it (the tests check this)."""
    import site
    import subprocess

    venv = tmp_path_factory.mktemp("python-without-project") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "project_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return py
