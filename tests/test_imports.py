"""The package modules import each other without a circle, and each side imports only what it
may: low-level helpers nothing above them, the client no TensorFlow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("seq2seq", "serving")


def module_files() -> dict[str, Path]:
    """Dotted module name → file, for every module of the two packages (generated code too)."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules that `path` imports anywhere in it (function bodies too: a lazy
    import is still an edge), each resolved to the module it names."""
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from a import b` imports module a.b when there is one, else a name of a
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        else:
            continue
        for t in targets:
            # importing a.b.c runs a/__init__ and a/b/__init__ first: those are imported too
            # (but not the importing module's own packages, which are being imported already)
            parts = t.split(".")
            chain = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
            out.update(m for m in chain if m in known and not (name + ".").startswith(m + "."))
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_graph_finder_sees_the_real_imports():
    graph = import_graph()
    # a few edges that exist, direct and lazy, absolute and package re-exports
    assert "seq2seq.bptt" in graph["seq2seq.layers.simple_rnn"]
    assert "seq2seq.cluster" in graph["seq2seq.files"]
    assert "seq2seq.layers.simple_rnn" in graph["seq2seq.layers"]
    assert "seq2seq.tasks.translation" in graph["seq2seq.__main__"]  # imported in a function
    assert "serving.v1.seq2seq_pb2" in graph["serving.client.client"]
    # a module's packages are imported with it: their __init__ runs first
    assert "seq2seq.data" in graph["seq2seq.inference"]  # it imports seq2seq.data.tokenizer
    assert "seq2seq.data" not in graph["seq2seq.data.tokenizer"]  # its own package: no edge
    # and the finder finds a circle when there is one
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circle_in_the_packages():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " → ".join(cycle)


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_low_level_modules_import_nothing_above_them():
    graph = import_graph()
    # files, cluster and config are used by everything: they import no model, training or task
    for low in ("seq2seq.files", "seq2seq.cluster", "seq2seq.config", "seq2seq.bptt"):
        above = {
            m
            for m in reachable(graph, low)
            if m.startswith(("seq2seq.training", "seq2seq.tasks", "seq2seq.models", "serving"))
        }
        assert not above, f"{low} imports {sorted(above)}"


def test_the_client_side_imports_only_the_client_and_the_generated_code():
    graph = import_graph()
    for module in ("serving.client", "serving.client.cli"):
        reach = reachable(graph, module)
        assert reach <= {
            "serving.client",
            "serving.client.client",
            "serving.v1",
            "serving.v1.seq2seq_pb2",
            "serving.v1.seq2seq_pb2_grpc",
        }, sorted(reach)


def test_the_library_never_imports_the_server():
    graph = import_graph()
    for module in (m for m in graph if m.startswith("seq2seq")):
        reach = {m for m in reachable(graph, module) if m.startswith("serving")}
        assert not reach, f"{module} imports {sorted(reach)}"


def test_the_export_format_and_inference_stay_below_keras_and_training():
    graph = import_graph()
    # the export format is read by the server and the benchmark: nothing of the package in it
    assert reachable(graph, "seq2seq.export_format") <= {"seq2seq"}  # the package's __init__
    # the server loads exports through seq2seq.inference: no Keras model, layer or training
    heavy = ("seq2seq.models", "seq2seq.layers", "seq2seq.training", "seq2seq.tasks")
    for module in ("seq2seq.inference", "serving.server.predictor", "serving.server.manager"):
        reach = {m for m in reachable(graph, module) if m.startswith(heavy)}
        assert not reach, f"{module} imports {sorted(reach)}"
    assert "seq2seq.inference" in graph["serving.server.manager"]


TRAINING_SIDE = (
    "seq2seq.config",
    "seq2seq.data.augment",
    "seq2seq.data.pipeline",
    "seq2seq.data.preparation",
    "seq2seq.data.sources",
    "seq2seq.evaluation",
    "seq2seq.training",
)


def test_the_server_imports_no_training_side_module():
    """What the server loads stays on the serving side: the tokenizer, not the data package's
    corpus preparation, batching or configuration (statically, and when really imported)."""
    graph = import_graph()
    for module in ("serving.server.main", "serving.server.predictor", "serving.server.http_api"):
        reach = {m for m in reachable(graph, module) if m.startswith(TRAINING_SIDE)}
        assert not reach, f"{module} imports {sorted(reach)}"
    code = (
        "import sys, serving.server.main, serving.server.predictor, seq2seq.inference\n"
        "import seq2seq.data.tokenizer\n"
        f"print(sorted(m for m in sys.modules if m.startswith({TRAINING_SIDE!r})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
    # and the package still offers its names, each from its module on first use
    import seq2seq.data as data
    from seq2seq.data.preparation import prepare

    assert data.prepare is prepare and "read_split" in dir(data)
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        data.nothing  # noqa: B018


def test_the_http_api_speaks_to_the_servicer_only():
    graph = import_graph()
    reach = reachable(graph, "serving.server.http_api")
    # of the library, only the export format (where the task names are defined)
    library = {m for m in reach if m.startswith("seq2seq")}
    assert library <= {"seq2seq", "seq2seq.export_format"}, sorted(reach)
    assert "serving.server.predictor" not in reach  # same servicer as gRPC, nothing of its own


def test_the_client_install_has_no_server_or_model_dependencies():
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = {d.split("==")[0] for d in project["dependencies"]}
    assert base == {"grpcio", "protobuf"}
    extras = project["optional-dependencies"]
    serving_side = {d.split("==")[0] for d in extras["stack"] + extras["ml"]}
    assert {"starlette", "uvicorn", "tensorflow-cpu"} <= serving_side


def test_the_tasks_are_defined_once_and_match_the_proto():
    """One list of task names (seq2seq.export_format.TASKS); every other module takes it, and
    the proto's Task enum has exactly one TASK_<NAME> for each."""
    defined = []
    for name, path in module_files().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Assign) and isinstance(node.value, (ast.Tuple, ast.Dict)):
                for target in node.targets:
                    if isinstance(target, ast.Name) and "TASK" in target.id:
                        literal = ast.get_source_segment(path.read_text(), node.value) or ""
                        if "translate" in literal:
                            defined.append(f"{name}.{target.id}")
    assert defined == ["seq2seq.export_format.TASKS"]
    from seq2seq.export_format import TASKS
    from serving.server.servicer import TASK_ENUMS
    from serving.v1 import seq2seq_pb2 as pb

    assert set(TASK_ENUMS) == set(TASKS)
    assert sorted(pb.Task.values()) == sorted([pb.TASK_UNSPECIFIED, *TASK_ENUMS.values()])
