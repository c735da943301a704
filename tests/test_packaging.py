"""The install layout: export/, runtimes/, training/ are installed as pinlite_edge.* sub-packages."""
import importlib
import tomllib

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
