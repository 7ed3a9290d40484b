"""metrics/ imports its schema from kvinject.trace_schema (one home) and has no import cycle."""

import ast
from pathlib import Path

import kvinject.trace_schema as schema

METRICS_DIR = Path(__file__).resolve().parents[2] / "metrics"
SCHEMA_CONSTANTS = {"SCHEMA_VERSION", "SEGMENTS", "STOP_REASONS", "STRATEGIES", "NOISE_KINDS",
                    "SCALAR_SERIES", "SETTINGS_KEYS"}


def _modules():
    return {path.stem: ast.parse(path.read_text()) for path in METRICS_DIR.glob("*.py")}


def test_no_schema_constant_is_defined_in_metrics():
    assert SCHEMA_CONSTANTS <= set(vars(schema))
    for name, tree in _modules().items():
        assigned = {target.id for node in tree.body if isinstance(node, ast.Assign)
                    for target in node.targets if isinstance(target, ast.Name)}
        assert not assigned & SCHEMA_CONSTANTS, (name, assigned & SCHEMA_CONSTANTS)


def test_metrics_modules_import_each_other_without_a_cycle():
    graph = {}
    for name, tree in _modules().items():
        graph[name] = {alias.name if node.module is None else node.module.split(".")[0]
                       for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 1
                       for alias in node.names}
    visiting, done = set(), set()

    def visit(node, path):
        assert node not in visiting, f"import cycle: {' -> '.join(path + [node])}"
        if node in done or node not in graph:
            return
        visiting.add(node)
        for child in graph[node]:
            visit(child, path + [node])
        visiting.discard(node)
        done.add(node)

    for name in graph:
        visit(name, [])
    assert "keys" in graph["aggregations"]   # the walk sees the relative imports
