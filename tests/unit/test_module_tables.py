"""README's module table and docs/architecture.md's tree name exactly the modules on disk.

A reader finds a concern from those two documents; a module added, moved or removed without
them is a layout the next engineer cannot see. The check reads them as written:

- README, the table headed ``| package / module | its job |``: a row is one directory. Its
  first cell names it (``importd/ops/``) or names files (```importd/config.py`, `errors.py```:
  the later ones in the first one's directory); in the second cell of a directory row every
  ```name.py``` is a module of that directory.
- docs/architecture.md, the first code block: each line starts with a package (``dir/``) or
  a module path, and a line of bare ``name.py`` words names modules of the directory of the
  one before them.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("importd", "api")
TICKED = re.compile(r"`([^`]+)`")
MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.py$")


def modules_on_disk(root: Path = ROOT) -> set[str]:
    """Every Python module under the packages, ``__init__.py`` left out (its package is named)."""
    return {str(p.relative_to(root)) for name in PACKAGES for p in (root / name).rglob("*.py")
            if p.name != "__init__.py" and "__pycache__" not in p.parts}


def packages_on_disk(root: Path = ROOT) -> set[str]:
    return {f"{p.parent.relative_to(root)}/" for name in PACKAGES for p in (root / name).rglob("__init__.py")
            if "__pycache__" not in p.parts}


def readme_table(root: Path = ROOT) -> tuple[set[str], set[str]]:
    """(modules, directories) README's module table names."""
    lines = (root / "README.md").read_text().splitlines()
    start = lines.index("| package / module | its job |")
    modules: set[str] = set()
    dirs: set[str] = set()
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        first, second = line.strip("|").split(" | ", 1)
        named = TICKED.findall(first)
        head = named[0]
        if head.endswith("/"):
            dirs.add(head)
            modules.update(head + m for m in TICKED.findall(second) if MODULE.match(m))
        else:
            base = head.rsplit("/", 1)[0] + "/"
            dirs.add(base)
            modules.add(head)
            modules.update(base + m for m in named[1:] if MODULE.match(m))
    return modules, dirs


def architecture_tree(root: Path = ROOT) -> tuple[set[str], set[str]]:
    """(modules, packages) the tree of docs/architecture.md names."""
    text = (root / "docs" / "architecture.md").read_text()
    block = text.split("```", 2)[1]
    modules: set[str] = set()
    packages: set[str] = set()
    for line in block.splitlines():
        words = line.split()
        if not words or "/" not in words[0]:
            continue
        first = words[0]
        if first.endswith("/"):
            packages.add(first)
            continue
        modules.add(first)
        base = first.rsplit("/", 1)[0] + "/"
        packages.add(base)
        for word in words[1:]:
            if not MODULE.match(word):
                break
            modules.add(base + word)
    return modules, packages


def test_readme_names_every_module_on_disk_and_none_that_is_not():
    modules, dirs = readme_table()
    on_disk = modules_on_disk()
    assert sorted(on_disk - modules) == [], "modules README's table does not name"
    assert sorted(modules - on_disk) == [], "modules README's table names that do not exist"
    assert sorted(packages_on_disk() - dirs) == [], "packages with no row in README's table"
    assert sorted(d for d in dirs if not (ROOT / d / "__init__.py").is_file()) == [], "rows for no package"


def test_the_architecture_tree_names_every_package_and_shared_module_and_nothing_else():
    modules, packages = architecture_tree()
    assert sorted(packages_on_disk() - packages) == [], "packages the tree leaves out"
    assert sorted(p for p in packages if not (ROOT / p / "__init__.py").is_file()) == [], "packages that do not exist"
    top = {m for m in modules_on_disk() if m.startswith("importd/") and m.count("/") == 1}
    assert sorted(top - modules) == [], "shared modules the tree leaves out"
    assert sorted(m for m in modules if not (ROOT / m).is_file()) == [], "modules that do not exist"


def test_the_check_sees_a_module_and_a_package_the_documents_leave_out(tmp_path: Path):
    """The check itself, on a copy of the documents and of the tree's file names: a module and
    a package created there and named nowhere are reported."""
    for name in ("README.md", "docs/architecture.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text((ROOT / name).read_text())
    for name in PACKAGES:
        for p in (ROOT / name).rglob("*.py"):
            target = tmp_path / p.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.touch()
    (tmp_path / "importd" / "ops" / "stray.py").touch()
    (tmp_path / "importd" / "newlayer").mkdir()
    (tmp_path / "importd" / "newlayer" / "__init__.py").touch()
    modules, dirs = readme_table(tmp_path)
    assert modules_on_disk(tmp_path) - modules == {"importd/ops/stray.py"}
    assert packages_on_disk(tmp_path) - dirs == {"importd/newlayer/"}
    _, packages = architecture_tree(tmp_path)
    assert packages_on_disk(tmp_path) - packages == {"importd/newlayer/"}
