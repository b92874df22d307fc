"""The layer contracts in ``.importlinter`` hold, and break when an import crosses a boundary."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=tree, capture_output=True, text=True,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}, timeout=120)


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A copy of the packages and the contracts, to break on purpose."""
    for name in ("importd", "api"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    return tmp_path


def test_the_tree_keeps_every_contract() -> None:
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.parametrize(("module", "line", "contract"), [
    ("importd/worker/retry.py", "from importd.imports import store", "The worker core knows nothing"),
    ("importd/worker/retry.py", "from importd.ops import dlq", "Layers"),
    ("importd/imports/copy/salvage.py", "import redis", "The COPY engine knows nothing"),
    ("importd/imports/copy/scan.py", "from importd.imports import store", "The COPY engine knows nothing"),
    ("api/views.py", "from importd.imports.copy import loader", "The API imports no COPY code"),
    ("importd/imports/copy/scan.py", "from importd.imports.copy import loader", "No import cycles"),
])
def test_an_import_across_a_boundary_breaks_its_contract(scratch: Path, module: str, line: str,
                                                          contract: str) -> None:
    path = scratch / module
    path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    out = _lint(scratch)
    assert out.returncode != 0
    broken = out.stdout.split("Broken contracts", 1)[1]
    assert contract in broken, out.stdout
