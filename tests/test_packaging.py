"""The install layout: export/, runtimes/, training/ are installed as pinlite_edge.* sub-packages."""
import importlib
import tomllib

import pytest

from conftest import REPO_ROOT

MAPPED = {"export": "pinlite_edge.export", "runtimes": "pinlite_edge.runtimes", "training": "pinlite_edge.training"}


def _declared_packages() -> set[str]:
    cfg = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert cfg["package-dir"] == {"pinlite_edge": "pinlite_edge", **{v: k for k, v in MAPPED.items()}}
    return set(cfg["packages"])


def _package_name(init) -> str:
    rel = init.parent.relative_to(REPO_ROOT)
    top = rel.parts[0]
    prefix = MAPPED.get(top, top).split(".")
    return ".".join(prefix + list(rel.parts[1:]))


def test_every_package_on_disk_is_declared_in_pyproject():
    on_disk = set()
    for top in ("pinlite_edge", *MAPPED):
        for init in (REPO_ROOT / top).rglob("__init__.py"):
            if "__pycache__" not in init.parts:
                on_disk.add(_package_name(init))
    missing = on_disk - _declared_packages()
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {sorted(missing)}"


def test_mapped_packages_import():
    for name in MAPPED.values():
        importlib.import_module(name)


def test_every_data_file_in_the_packages_is_declared_as_package_data():
    """The wheel ships only the .py files and package-data globs: a data file the code reads (the shipped split
    files, py.typed) that no glob covers is missing from a non-editable install, and CI (editable) would not see it."""
    import fnmatch
    import subprocess

    import pytest

    if not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout (e.g. an unpacked sdist): the tracked files are unknown")
    package_data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    tracked = subprocess.run(["git", "ls-files", *MAPPED, "pinlite_edge"], cwd=REPO_ROOT, capture_output=True,
                             text=True, check=True).stdout.split()
    uncovered = []
    for rel in tracked:
        if rel.endswith(".py"):
            continue
        top, _, inner = rel.partition("/")
        package = MAPPED.get(top, top)
        if not any(fnmatch.fnmatch(inner, glob) for glob in package_data.get(package, [])):
            uncovered.append(rel)
    assert not uncovered, f"add these to [tool.setuptools.package-data] in pyproject.toml: {uncovered}"


def test_scoring_an_onnx_model_never_imports_torch():
    """Heavy backends load when used: the scoring CLIs read the export format table, whose package imported torch
    and every exporter (3 s, and a failure where torch is missing); an ONNX Detector needs neither."""
    import subprocess
    import sys

    code = ("import sys; import pinlite_edge.detect as d, pinlite_edge.scan as s; d.build_parser(); s.build_parser();"
            " from pinlite_edge import Detector; from pinlite_edge.export import FORMATS, get_format;"
            " print(sorted(m for m in ('torch', 'torchvision', 'executorch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.parametrize("before", [None, "/opt/vendor/lib"])
def test_importing_opencv_leaves_the_library_search_path_of_the_hosts_subprocesses_alone(before):
    """opencv-python's loader prepends its folder and a trailing ':' to LD_LIBRARY_PATH: every subprocess the host
    started afterwards searched its working directory for shared libraries."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    if before is not None:
        env["LD_LIBRARY_PATH"] = before
    code = ("import os; from pinlite_edge import Detector; import pinlite_edge.features.facecrop, "
            "pinlite_edge.data.synthetic_render; from pinlite_edge.utils.opencv import cv2; cv2.getNumThreads(); "
            "print(repr(os.environ.get('LD_LIBRARY_PATH')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                         env=env)
    assert out.stdout.strip() == repr(before), out.stdout + out.stderr


def test_export_submodules_are_still_attributes_of_the_package():
    """Lazy attributes hid the submodules: ``pinlite_edge.export.api`` as an attribute raised AttributeError."""
    import pinlite_edge.export as export

    assert export.api.__name__ == "pinlite_edge.export.api" and export.formats.FORMATS is export.FORMATS
    assert {"FORMATS", "export_model"} <= set(dir(export))
