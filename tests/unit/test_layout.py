"""The house rules of the README's layout section, checked on the code itself: which package may
import which, and no file past about 400 lines."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import ROOT

# schemas <- pipeline <- jobs; pipeline <- trainer <- transfer <- experiments. dedup (the dedup job's
# feature) may use trainer's export loader (--method embedding|rmac) and is used by jobs; nothing but
# tests and bench imports experiments (the orchestration of `make compare`).
ALLOWED = {
    "schemas": {"schemas"},
    "pipeline": {"schemas", "pipeline"},
    "dedup": {"schemas", "pipeline", "trainer", "dedup"},
    "jobs": {"schemas", "pipeline", "jobs", "dedup"},
    "trainer": {"schemas", "pipeline", "trainer"},
    "transfer": {"schemas", "pipeline", "trainer", "transfer"},
    "experiments": {"schemas", "pipeline", "trainer", "transfer", "experiments"},
}
SPARK_MODULES = {"dedup": {"dedup/spark.py"}}  # a feature package keeps its DataFrame transforms in one module
OURS = set(ALLOWED) | {"bench", "tests"}
MAX_LINES = 420


def imported_names(path: Path) -> set[str]:
    """Top-level names of every module a file imports, anywhere in it (lazy imports count)."""
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def imported_packages(path: Path) -> set[str]:
    """Top-level names of our packages that a file imports, anywhere in it (lazy imports count)."""
    return imported_names(path) & OURS


def package_files(pkg: str) -> list[Path]:
    return sorted(p for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)


def test_imported_packages_sees_lazy_and_from_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("import os\nfrom trainer.export import load_model\n\ndef f():\n    import transfer.logreg\n")
    assert imported_packages(f) == {"trainer", "transfer"}


@pytest.mark.parametrize("pkg", sorted(ALLOWED))
def test_no_package_imports_one_above_it(pkg):
    bad = {str(p.relative_to(ROOT)): sorted(imported_packages(p) - ALLOWED[pkg]) for p in package_files(pkg)}
    bad = {k: v for k, v in bad.items() if v}
    assert not bad, f"{pkg} may import only {sorted(ALLOWED[pkg])}: {bad}"


@pytest.mark.parametrize("pkg", sorted(SPARK_MODULES))
def test_spark_stays_in_one_module_of_a_feature_package(pkg):
    spark = {str(p.relative_to(ROOT)) for p in package_files(pkg) if "pyspark" in imported_names(p)}
    assert spark == SPARK_MODULES[pkg], f"{pkg}: pyspark imported by {sorted(spark)}, allowed only in {SPARK_MODULES[pkg]}"


def test_files_stay_small():
    long = {str(p.relative_to(ROOT)): n for pkg in sorted(OURS) for p in package_files(pkg)
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines: {long}"
