"""The package declares what it imports (the library and the research code), and `pip install -e .` gives a
`lumina` command."""

import ast
import importlib
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = {"flash_attn"}  # used when installed (CUDA attention kernel), never required
PACKAGES = ("lumina", "lumina_research")  # both are installed (setuptools' include = ["lumina*"])


def third_party_imports():
    found = {}
    for path in sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            for name in names:
                top = name.split(".")[0]
                if top not in sys.stdlib_module_names and top not in PACKAGES:
                    found.setdefault(top, path.relative_to(ROOT))
    return found


def declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] + [d for extra in project["optional-dependencies"].values() for d in extra]
    return {re.split(r"[<>=!~\[ ;]", s, maxsplit=1)[0].lower().replace("_", "-") for s in specs}


def test_every_imported_distribution_is_declared():
    dists = packages_distributions()
    names = declared()
    missing = {}
    for module, where in third_party_imports().items():
        if module in OPTIONAL:
            continue
        candidates = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not candidates & names:
            missing[module] = str(where)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_requirements_list_only_what_is_imported_or_declared():
    """requirements.txt may pin what pyproject declares (and the test tools), nothing the code never imports."""
    names = declared()
    reqs = [re.split(r"[<>=!~\[ ;#]", line.strip(), maxsplit=1)[0].lower().replace("_", "-")
            for line in (ROOT / "requirements.txt").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert set(reqs) - names == set(), set(reqs) - names


def test_console_script_points_at_the_cli():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    module, func = project["scripts"]["lumina"].split(":")
    main = getattr(importlib.import_module(module), func)
    assert main(["presets"]) == 0


def test_tracked_tree_leaves_room_for_the_gpu_wheels():
    """A GPU run uploads every tracked file plus diffusers' and bitsandbytes' wheels (13 MB) within 64 MiB."""
    import shutil
    import subprocess

    import pytest

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    size = sum((ROOT / f.decode()).stat().st_size for f in files if f and (ROOT / f.decode()).is_file())
    assert size <= 50 * 2**20, f"tracked files hold {size / 2**20:.1f} MiB; keep them under 50 MiB"
