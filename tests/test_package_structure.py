"""Structure of the package: no import cycles, and one home for each trace-schema constant.

Import rule: a cycle is any cycle among kvinject modules through imports that can run, at module
level or inside a function (a lazy import runs when its function is called, and then completes the
cycle); ``if TYPE_CHECKING:`` blocks never run and do not count.

Both tests read the source tree as setup.cfg's ``package_dir`` installs it (folder -> kvinject.*),
so they see every module whether or not anything imports it.
"""
import ast
import configparser
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_MODULE = "kvinject.trace_schema"
SCHEMA_CONSTANTS = ("SCHEMA_VERSION", "SEGMENTS", "STOP_REASONS", "NOISE_KINDS", "STRATEGIES", "SCALAR_SERIES",
                    "SETTINGS_KEYS")


def package_modules() -> dict[str, Path]:
    """Every kvinject.* module name -> its source file."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    mapping = dict(line.split("=") for line in config["options"]["package_dir"].strip().splitlines())
    modules = {}
    for package, folder in ((p.strip(), f.strip()) for p, f in mapping.items()):
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            # A nested folder that is its own entry in package_dir is read under that entry.
            modules.setdefault(name, path)
    return modules


def _type_checking_only(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The kvinject modules that importing ``name`` can import: module-level imports and imports
    inside functions (they run when the function is called), but not ``if TYPE_CHECKING:`` blocks,
    which never run. ``from package import x`` counts as importing ``package.x`` when that is a
    module, else ``package``; importing ``a.b.c`` is an edge to ``a.b.c`` only (its parent packages
    are already being imported when a submodule imports them back, which is no cycle)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = set()

    def visit(node):
        if isinstance(node, ast.If) and _type_checking_only(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), str(path)))
    return {module for module in found if module in modules and module != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state = {}  # module -> "open" while on the current path, "done" after
    path = []

    def walk(module):
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = walk(target)
                if cycle:
                    return cycle
        path.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = walk(module)
            if cycle:
                return cycle
    return None


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def test_the_walk_sees_every_folder_and_lazy_imports():
    graph = import_graph()
    assert {"kvinject.cli", "kvinject.model_adapters.engine.rope", "kvinject.metrics",
            "kvinject.adaptation_tasks.adaptation_math.data"} <= set(graph)
    assert "kvinject.model_adapters.engine.row_cache" in graph["kvinject.model_adapters.engine.rope"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def constant_definitions(source: str, constant: str) -> list[int]:
    """Line numbers where ``constant`` is bound at any level (assignment, annotated assignment,
    for / with targets, or an import under that name other than from the schema module)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.For)):
            targets = [node.target]
        elif isinstance(node, ast.ImportFrom) and node.module != SCHEMA_MODULE:
            lines += [node.lineno for alias in node.names if alias.asname == constant]
        for target in targets:
            if any(isinstance(n, ast.Name) and n.id == constant for n in ast.walk(target)):
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("constant", SCHEMA_CONSTANTS)
def test_each_schema_constant_is_defined_only_in_the_schema_module(constant):
    sources = {name: path for name, path in package_modules().items()}
    sources.update({f"tests/{p.relative_to(ROOT / 'tests')}": p for p in (ROOT / "tests").rglob("*.py")})
    homes = [f"{name}:{line}" for name, path in sorted(sources.items())
             for line in constant_definitions(path.read_text(), constant)]
    assert homes == [f"{SCHEMA_MODULE}:{_line_of(constant)}"], f"{constant} defined at {homes}"


def copied_values(source: str, value: tuple) -> list[int]:
    """Line numbers of string literals (tuple, list or set) that spell ``value`` out again: all of it,
    or a contiguous run of at least 3 of its entries (e.g. the segments without the sink)."""
    runs = {value} | {value[i:j] for i in range(len(value)) for j in range(i + 3, len(value) + 1)}
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and node.elts and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            if tuple(e.value for e in node.elts) in runs:
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("constant", [c for c in SCHEMA_CONSTANTS if c != "SCHEMA_VERSION"])
def test_no_module_spells_a_schema_constant_out_again(constant):
    """Package code only: tests may spell values out to parametrise over them."""
    from kvinject import trace_schema

    value = tuple(getattr(trace_schema, constant))
    copies = [f"{name}:{line}" for name, path in sorted(package_modules().items())
              for line in copied_values(path.read_text(), value)]
    assert copies == [f"{SCHEMA_MODULE}:{_line_of(constant)}"], f"{constant} spelled out at {copies}"


def _line_of(constant: str) -> int:
    source = package_modules()[SCHEMA_MODULE].read_text()
    return next(i for i, line in enumerate(source.splitlines(), 1) if re.match(rf"{constant}\s*=", line))


def test_a_second_definition_would_be_found():
    assert constant_definitions("SEGMENTS = ('sink',)\n", "SEGMENTS") == [1]
    assert constant_definitions("def f():\n    SEGMENTS: tuple = ()\n", "SEGMENTS") == [2]
    assert constant_definitions("from kvinject.trace_schema import SEGMENTS\n", "SEGMENTS") == []
    assert constant_definitions("NON_SINK_SEGMENTS = ()\n", "SEGMENTS") == []
    segments = ("sink", "original_prompt", "generated_before", "injected", "generated_after")
    assert copied_values("X = ('original_prompt', 'generated_before', 'injected')\n", segments) == [1]
    assert copied_values("X = ['generated_before', 'injected']\nY = ('injected', 'sink', 'x')\n", segments) == []


def name_lists(source: str, names: set[str], at_least: int = 3) -> list[int]:
    """Line numbers of string literals (tuple, list or set) holding ``at_least`` of ``names``, in any order."""
    return [node.lineno for node in ast.walk(ast.parse(source))
            if isinstance(node, (ast.Tuple, ast.List, ast.Set))
            and len({e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)} & names)
            >= at_least]


def _homes(names: set[str]) -> set[str]:
    return {name for name, path in package_modules().items() if name_lists(path.read_text(), names)}


def test_the_headline_measures_are_listed_only_in_the_key_catalogue():
    """HEADLINE (lm-eval's default table), LEADERBOARD and ONE_PROBLEM (`kvinject single`) live in
    kvinject.metrics.keys; the leaderboard and `kvinject single` read them from there."""
    from kvinject.metrics import keys
    from kvinject.reports.leaderboard import HEADLINE_MEASURES

    for names in (keys.HEADLINE, keys.ONE_PROBLEM):
        assert _homes(set(names)) == {"kvinject.metrics.keys"}
    assert HEADLINE_MEASURES is keys.LEADERBOARD and set(keys.LEADERBOARD) <= set(keys.HEADLINE)


def test_the_model_identity_arguments_are_listed_only_in_the_run_fingerprint():
    """The leaderboard groups rows by every --model_args but these; the fingerprint's own lists."""
    import dataclasses

    from kvinject.model_adapters import run_fingerprint
    from kvinject.model_adapters.model_args import ModelArgs
    from kvinject.reports.leaderboard import MODEL_IDENTITY_ARGS

    identity = set(run_fingerprint.MODEL_ARGS) | set(run_fingerprint.UNFINGERPRINTED_ARGS)
    assert _homes(identity) == {"kvinject.model_adapters.run_fingerprint"}
    assert MODEL_IDENTITY_ARGS == identity
    assert identity <= {field.name for field in dataclasses.fields(ModelArgs)}
    assert "result_store" in identity


def test_a_second_name_list_would_be_found():
    names = {"a", "b", "c", "d"}
    assert name_lists("X = ('c', 'a', 'b')\ndef f():\n    return {'d', 'a', 'x', 'b'}\n", names) == [1, 3]
    assert name_lists("X = ('a', 'b', 'x')\n", names) == []


# ----------------------------------------------------------------------------------- test layout
# The tests are laid out like the code: tests/<folder>/test_*.py tests the code folder of the same
# name (adaptation_tasks/, model_adapters/engine/, metrics/, reports/, training/, prm/, configs/, or
# kvinject/commands/ as tests/commands/); the kvinject/ core modules are tested at tests/ itself.
# Basenames stay unique: pytest's default import mode imports each test file by its basename.
TESTS = ROOT / "tests"
SEPARATE_SUITES = ("benchmarks",)  # tests/benchmarks: the pytest-benchmark suite (README "Benchmarks")
HELPER_MODULES = ("helpers", "report_runs")  # tests/helpers.py, tests/report_runs.py


def unit_test_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("test_*.py") if p.relative_to(TESTS).parts[0] not in SEPARATE_SUITES)


# A file named test_<prefix>_*.py tests that code folder and lives in its test folder.
NAME_PREFIXES = {"engine": "model_adapters/engine", "metrics": "metrics", "reports": "reports",
                 "tasks": "adaptation_tasks", "commands": "commands", "training": "training", "prm": "prm"}


def misplaced_tests(files, root: Path = ROOT) -> list[str]:
    """Test files whose folder under tests/ names no code folder (at the root or under kvinject/), or
    whose name prefix names another folder than theirs."""
    misplaced = []
    for path in files:
        folder = path.parent.relative_to(root / "tests")
        prefix = path.stem.removeprefix("test_").split("_")[0]
        if folder.parts and not ((root / folder).is_dir() or (root / "kvinject" / folder).is_dir()):
            misplaced.append(str(path.relative_to(root)))
        elif NAME_PREFIXES.get(prefix, folder.as_posix()) != folder.as_posix():
            misplaced.append(str(path.relative_to(root)))
    return misplaced


def test_every_test_file_lives_in_the_folder_of_the_code_it_tests():
    files = unit_test_files()
    assert {p.parent.relative_to(TESTS).as_posix() for p in files} >= {
        ".", "adaptation_tasks", "commands", "metrics", "model_adapters", "model_adapters/engine", "reports",
        "training", "prm"}
    assert misplaced_tests(files) == []


def test_test_file_basenames_are_unique():
    names = [p.name for p in TESTS.rglob("test_*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


def test_a_misplaced_test_file_would_be_found(tmp_path):
    (tmp_path / "metrics").mkdir()
    (tmp_path / "kvinject" / "commands").mkdir(parents=True)
    files = [tmp_path / "tests" / rel for rel in
             ("test_a.py", "metrics/test_b.py", "commands/test_c.py", "engine/test_d.py", "metrics/x/test_e.py",
              "metrics/test_metrics_f.py", "test_engine_g.py", "metrics/test_reports_h.py")]
    assert misplaced_tests(files, tmp_path) == ["tests/engine/test_d.py", "tests/metrics/x/test_e.py",
                                                "tests/test_engine_g.py", "tests/metrics/test_reports_h.py"]


def helper_calls_in_tests(source: str) -> list[str]:
    """``test:name`` for each helper function a test body uses through a helper-module import
    rather than a fixture; constants (UPPER_CASE) and decorators (parametrize lists) are fine."""
    tree = ast.parse(source)
    imported = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and node.module in HELPER_MODULES for alias in node.names}
    found = []
    for test in (n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test")):
        body = {n.id for statement in test.body for n in ast.walk(statement) if isinstance(n, ast.Name)}
        used = {name for name in body & imported if not name.isupper()}
        found += [f"{test.name}:{name}" for name in sorted(used - {arg.arg for arg in test.args.args})]
    return found


def test_test_modules_import_no_helper_function_a_fixture_serves():
    """Shared helpers reach test functions as conftest.py fixtures; a test module imports from the
    helper modules only constants and what it uses at module level (parametrize lists, its own helpers)."""
    offenders = [f"{path.relative_to(ROOT)}::{use}" for path in unit_test_files()
                 for use in helper_calls_in_tests(path.read_text())]
    assert offenders == []


def test_a_helper_used_past_its_fixture_would_be_found():
    source = ("from helpers import TOLERANCE, run_series, build_trace\n"
              "@pytest.mark.parametrize('x', run_series([1]))\n"
              "def test_a(x, build_trace):\n    build_trace(run_series([x]), TOLERANCE)\n"
              "def helper():\n    return build_trace({})\n")
    assert helper_calls_in_tests(source) == ["test_a:run_series"]
