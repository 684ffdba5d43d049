"""The package's structure, as the README's Layout section states it: imports run one way (HTTP
above jobs above the model families and state), nothing below HTTP imports Flask or the web layer,
metric definitions need neither, there are no import cycles, and only `state.keys` spells a Redis key."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

BACKEND = Path(__file__).resolve().parent.parent / "backend"
ENTRY = {"backend.cli", "backend.__main__"}  # the commands start the web layer and the workers


def module_name(path: Path) -> str:
    parts = path.relative_to(BACKEND.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """The backend modules and third-party packages `path` imports, at any depth, as absolute names."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            found.add(base)
            found |= {
                f"{base}.{alias.name}"
                for alias in node.names
                if (BACKEND.parent / f"{base}.{alias.name}".replace(".", "/")).with_suffix(".py").exists()
            }
    return found


MODULES = {module_name(p): imports(p) for p in BACKEND.rglob("*.py")}


def backend_imports(name: str) -> set[str]:
    return {m for m in MODULES[name] if m in MODULES and m != name and not name.startswith(m + ".") and m != "backend"}


def test_nothing_below_http_imports_flask_or_the_web_layer():
    for name, found in MODULES.items():
        if name.startswith("backend.web") or name in ENTRY:
            continue
        assert not {m for m in found if m.split(".")[0] == "flask" or m.startswith("backend.web")}, name


def test_the_layers_import_downwards_only():
    """`web/` is imported by the commands only, `jobs/` by `web/` and the commands; `state/` and the
    core below them by anyone (the cycle test keeps those below from importing back up)."""
    importers = {"backend.web": ("backend.web",), "backend.jobs": ("backend.jobs", "backend.web")}
    for name in set(MODULES) - ENTRY:
        for layer, allowed in importers.items():
            above = [m for m in backend_imports(name) if m.startswith(layer)]
            assert not above or name.startswith(allowed), f"{name} imports {above}"


def test_there_are_no_import_cycles():
    graph = {name: backend_imports(name) for name in MODULES}
    state: dict[str, int] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for nxt in graph.get(name, ()):
            assert state.get(nxt) != 1, " -> ".join([*path, name, nxt])
            if nxt not in state:
                visit(nxt, [*path, name])
        state[name] = 2

    for name in graph:
        if name not in state:
            visit(name, [])


def test_only_the_keys_module_spells_a_redis_key():
    spelled = re.compile(r"""["']lsb:|\bkey\(\w+, *["']""")
    offenders = [str(p.relative_to(BACKEND)) for p in BACKEND.rglob("*.py") if p.name != "keys.py" and spelled.search(p.read_text())]
    assert offenders == []


def test_metric_definitions_load_without_the_web_layer_or_the_runtime():
    assert backend_imports("backend.metrics") == set()
    script = "import json, sys, backend.metrics; print(json.dumps(sorted(m for m in sys.modules if m.startswith(('flask', 'backend.')))))"
    loaded = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=BACKEND.parent).stdout
    assert json.loads(loaded) == ["backend.metrics"]


def test_the_job_names_stored_in_redis_name_functions_that_exist():
    import importlib

    from backend.state import keys

    for name in (keys.RETRAIN_JOB, keys.MISLABELS_JOB, keys.PUBLISH_JOB):
        module, function = name.rsplit(".", 1)
        assert callable(getattr(importlib.import_module(module), function)), name
