"""jobs/lib/session.py: what executors get (the project's code zip, the project's Python)."""
import ast
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from jobs.lib.session import PACKAGES, code_zip
from tests.helpers import ROOT

VENV_BIN = Path(sys.executable).parent


def first_party_imports(source: str) -> set[str]:
    """Top-level names of the project's packages that a module imports (anywhere in it)."""
    ours = {d.name for d in ROOT.iterdir() if (d / "__init__.py").is_file()}
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & ours


def test_code_zip_ships_every_package_its_code_imports_and_nothing_else():
    with zipfile.ZipFile(code_zip()) as z:
        names = z.namelist()
        sources = {n: z.read(n).decode() for n in names if n.endswith(".py")}
    assert {n.split("/")[0] for n in names} == set(PACKAGES)
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc") or "/." in n or n.startswith(".")]
    on_disk = {p.relative_to(ROOT).as_posix() for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")
               if "__pycache__" not in p.parts}
    assert set(sources) == on_disk
    assert "trainer/export.py" in sources and "pipeline/data/wordnet_lexnames" in names  # code and its data
    imported = {n: first_party_imports(src) - set(PACKAGES) for n, src in sources.items()}
    assert {n: i for n, i in imported.items() if i} == {}  # e.g. trainer importing transfer


def clean_env(path: str) -> dict:
    """This environment without anything that points Spark or Python at an interpreter or path."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PYSPARK_") and k not in ("PYTHONPATH", "VIRTUAL_ENV", "SPARK_HOME")}
    return {**env, "PATH": path, "SPARK_LOCAL_IP": "127.0.0.1"}


def test_executor_imports_work_from_the_zip_alone(python_without_project, tmp_path):
    """What dedup --method embedding runs on executors imports from the shipped zip, in an
    interpreter that does not have the project (and really does not: `import trainer` fails)."""
    env = clean_env(os.environ["PATH"])
    bare = subprocess.run([str(python_without_project), "-c", "import trainer"], cwd=tmp_path, env=env,
                          capture_output=True, text=True)
    assert bare.returncode != 0 and "No module named 'trainer'" in bare.stderr
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import dedup.describe, dedup.spark, jobs.dedup; "
            "import trainer.export, trainer.models, trainer.data.transforms; "
            "assert trainer.export.__file__.startswith(sys.argv[1]), trainer.export.__file__; "
            "m = trainer.export.load_model('random:regnety_002', img_size=32); print(type(m.trunk).__name__)")
    r = subprocess.run([str(python_without_project), "-c", code, str(code_zip())], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "RegNet"


WHICH_PYTHON = f"""
import sys
sys.path.insert(0, {str(ROOT)!r})
from jobs.lib.session import get_session

spark = get_session("which-python")
executor = spark.sparkContext.parallelize([0], 1).map(lambda _: __import__("sys").prefix).collect()[0]
print("prefixes", sys.prefix, executor)
"""


def test_the_environments_python_runs_driver_and_executors(tmp_path):
    """With only the venv's bin/ on PATH (as `source .venv/bin/activate` leaves it) and no PYSPARK_*
    variable, spark-submit runs the driver and the local executors on the venv's Python; so does
    the venv's python run directly while another python3 comes first on PATH."""
    script = tmp_path / "which_python.py"
    script.write_text(WHICH_PYTHON)
    rest = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != VENV_BIN)
    venv = os.path.realpath(sys.prefix)
    runs = {"spark-submit": ([str(VENV_BIN / "spark-submit"), str(script)], f"{VENV_BIN}{os.pathsep}{rest}"),
            "python": ([sys.executable, str(script)], f"/usr/bin{os.pathsep}{rest}")}
    for name, (cmd, path) in runs.items():
        r = subprocess.run(cmd, cwd=tmp_path, env=clean_env(path), capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"{name}: {r.stderr[-3000:]}"
        line = next(x for x in r.stdout.splitlines() if x.startswith("prefixes"))
        assert [os.path.realpath(p) for p in line.split()[1:]] == [venv, venv], name
