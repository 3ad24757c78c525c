import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

from tests.helpers import launch  # noqa: E402 (needs the checkout on sys.path)

# Markers given by where a test is or what it uses, so no such test can land in the fast tier
# (`-m "not spark and not multiprocess and not cluster and not slow and not integration"`).
# `multiprocess` is written on each test that launches torchrun; tests/helpers/launch.py fails a
# launch from a test without it. `slow` is written by hand.
FOLDER_MARKERS = {"spark": ("spark",), "cluster": ("cluster", "spark"), "trainer": ("integration",),
                  "transfer": ("integration",)}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    tests = Path(__file__).parent
    for item in items:
        folder = item.path.relative_to(tests).parts[0] if item.path.is_relative_to(tests) else ""
        names = {*FOLDER_MARKERS.get(folder, ()), *(["spark"] if "spark" in item.fixturenames else [])}
        for name in sorted(names - {m.name for m in item.iter_markers()}):
            item.add_marker(name)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    launch.running_test = item  # before its fixtures are set up: they may launch too


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    launch.running_test = None


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
def s3_session():
    """moto's S3 server on loopback for the whole session, its AWS_* variables (test credentials,
    AWS_ENDPOINT_URL) set before any SparkSession starts: local executors' Python workers keep
    the environment their daemon started with."""
    from tests.helpers.servers import s3_server

    with s3_server(buckets=()) as server:
        yield server


@pytest.fixture
def s3(s3_session):
    """A fresh bucket on the session's S3 server: S3Bucket(endpoint, client, name)."""
    import uuid

    from tests.helpers.servers import S3Bucket

    endpoint, client = s3_session
    name = f"t-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return S3Bucket(endpoint, client, name)


@pytest.fixture(scope="session")
def spark(s3_session):
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


@pytest.fixture(scope="module")
def shards8(tmp_path_factory):
    """tests/helpers/readerkit.py's unique images in 5 shards (4 x 8 + 5), with the FFCV file."""
    from tests.helpers.readerkit import make_shards

    return make_shards(tmp_path_factory.mktemp("readers") / "s8", 8, ffcv=True)


@pytest.fixture(scope="module")
def shards4(tmp_path_factory):
    """tests/helpers/readerkit.py's unique images in 10 shards (9 x 4 + 1)."""
    from tests.helpers.readerkit import make_shards

    return make_shards(tmp_path_factory.mktemp("readers") / "s4", 4)


@pytest.fixture(scope="module")
def indexed(shards4, tmp_path_factory):
    """A sample index of 2 epochs of 60 samples over the 37 images of shards4: (its path, the epochs)."""
    from tests.helpers.readerkit import index_epochs
    from tests.helpers.shardkit import write_sample_index

    epochs = index_epochs(60, 2)
    return write_sample_index(shards4, tmp_path_factory.mktemp("index") / "samples", epochs), epochs
