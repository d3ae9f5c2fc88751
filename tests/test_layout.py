"""The package's architecture as rules that CI checks: no import cycles, each folder imports only what
the README's Layout table allows, and `import detector` stays light."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "detector"


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, at any depth of the file (function-level imports and
    ``importlib.import_module("detector....")`` strings count too)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("detector."):
                targets = [node.value]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_each_folder_imports_only_what_the_layout_allows() -> None:
    allowed_leaves = {"detector.constants", "detector.files", "detector.labels", "detector.arrays", "detector.threads",
                      "detector.errors"}
    rules = {
        "detector.modeling": ("detector.modeling", "detector.constants", "detector.threads", "detector.errors"),
        "detector.data": ("detector.data", *allowed_leaves),
        "detector.deploy": ("detector.deploy", "detector.modeling", "detector.data", "detector.checkpoint",
                            *allowed_leaves),
    }
    graph = import_graph()
    broken = [(module, target) for module, targets in graph.items() for prefix, allowed in rules.items()
              if module.startswith(prefix) for target in targets if not target.startswith(allowed)]
    assert broken == []


def test_import_detector_stays_light() -> None:
    heavy = ["cv2", "onnxruntime", "onnx", "av", "matplotlib", "lightning", "albumentations", "pycocotools"]
    code = f"import sys, detector; print([m for m in {heavy!r} if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
