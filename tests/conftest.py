import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")


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
