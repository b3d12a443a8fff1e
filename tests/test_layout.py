"""The package's layout rules, checked on the source: no import cycle between modules nor between packages, no
import upwards (``FLOORS``), importing the models loads no inference, and the models (the LightningModules) import
no run machinery (``training/``, ``checkpoints/run_state.py``, loggers)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cyclegan_lightning"
# Floors, lowest first: a package or top-level module imports only from its own floor or lower ones (imports inside
# functions count too). Within the ground floor the small modules may use each other (the cycle test still holds).
FLOORS = (
    (
        "errors",
        "directions",
        "image_range",
        "run_layout",
        "runs",
        "hardware",
        "config",
        "cli",
    ),  # names, rules, run folders
    ("downloads",),  # the one verified downloader and its registry (datasets, pretrained files, metric weights)
    ("networks",),  # plain nn.Modules
    ("data",),  # images, preprocessing, datasets, the DataModule
    ("metrics",),  # weight-free metrics: SWD, health signals, paired PSNR/SSIM
    ("checkpoints",),  # the file format, safe loading, atomic writing, generators for inference
    ("models",),  # the LightningModules
    ("inference",),  # Translator, tiling, prediction, export
    ("evaluation",),  # FID/KID, callbacks over validation, evaluate, leaderboard (translates through inference)
    ("training",),  # a run: builds everything from the config
    ("serving", "fetch"),  # the HTTP service over a Translator; the fetch command
)
RUN_MACHINERY = ("cyclegan_lightning.training", "cyclegan_lightning.checkpoints.run_state", "lightning.pytorch.loggers")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, top_level_only: bool) -> set[str]:
    """Modules ``path`` imports (``from x import y`` counts as ``x.y`` when that is a module, else ``x``)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def graph(top_level_only: bool) -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in imports_of(path, top_level_only) if m in modules} - {name} for name, path in modules.items()
    }


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_between_modules():
    edges = graph(top_level_only=False)  # deferred imports inside functions count too
    # a package's __init__ re-exporting its submodules is not a cycle of the submodules themselves
    edges = {k: {m for m in v if not (k.startswith(m + ".") and m in edges)} for k, v in edges.items()}
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


def test_the_cycle_check_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_models_import_no_run_machinery():
    offenders = [
        f"{path.name} imports {name}"
        for path in (PACKAGE / "models").glob("*.py")
        for name in imports_of(path, top_level_only=False)
        if name.startswith(RUN_MACHINERY)
    ]
    assert not offenders, offenders


def package_of(module: str) -> str:
    """``cyclegan_lightning.models.base`` -> ``models``; ``cyclegan_lightning`` (the root re-export) -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def package_graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for module, imported in graph(top_level_only=False).items():
        if package_of(module):
            edges.setdefault(package_of(module), set()).update(
                package_of(m) for m in imported if package_of(m) and package_of(m) != package_of(module)
            )
    return edges


def test_no_import_cycle_between_packages():
    edges = package_graph()
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges) or [])


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    floor = {name: level for level, names in enumerate(FLOORS) for name in names}
    return [
        f"{a} (floor {floor[a]}) imports {b} (floor {floor[b]})" for a in edges for b in edges[a] if floor[b] > floor[a]
    ]


def test_every_package_has_a_floor_and_none_imports_upwards():
    edges = package_graph()
    placed = {name for names in FLOORS for name in names}
    assert set(edges) <= placed, f"give these a floor in FLOORS: {sorted(set(edges) - placed)}"
    assert not upward_imports(edges), upward_imports(edges)


def test_the_floor_check_finds_an_import_upwards():
    assert upward_imports({"models": {"networks"}, "checkpoints": {"models"}}) == [
        "checkpoints (floor 5) imports models (floor 6)"
    ]


def test_importing_the_models_loads_no_inference_nor_evaluation():
    code = (
        "import sys, cyclegan_lightning.models; "
        "print(sorted({m for m in sys.modules if m.startswith(('cyclegan_lightning.inference', "
        "'cyclegan_lightning.evaluation', 'cyclegan_lightning.training'))}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], cwd=PACKAGE.parent, capture_output=True, text=True, check=True, timeout=120
    )
    assert loaded.stdout.strip() == "[]", loaded.stdout
