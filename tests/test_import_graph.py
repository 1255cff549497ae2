"""scripts/import_graph.py: the package's import graph has no cycle and keeps its layers; the
check itself finds a cycle and a broken layer where a small graph has them."""

import importlib.util
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "import_graph.py"
spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
import_graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(import_graph)


def test_the_package_has_no_import_cycle_and_keeps_its_layers():
    result = subprocess.run([sys.executable, str(SCRIPT), "--quiet"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "no cycle, layers kept" in result.stdout


def test_the_graph_sees_deferred_and_relative_imports():
    edges = import_graph.graph()
    # a deferred (in-function), relative import: Predictor.probability imports .inference
    assert "lumbo_bids.model.inference" in edges["lumbo_bids.model.predictor"]
    assert "lumbo_bids.training.trainer" in edges["lumbo_bids.training.finetune"]


def test_a_cycle_is_found():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert import_graph.cycles(edges) == [["a", "b", "c"]]
    assert import_graph.cycles({"a": {"b"}, "b": set()}) == []


def test_a_broken_layer_is_named():
    broken = import_graph.layer_breaks(
        {"lumbo_bids.model.artifact": {"lumbo_bids.training.trainer"}, "lumbo_bids.geometry": {"lumbo_bids.model.artifact"}}
    )
    assert any("lumbo_bids.model.artifact imports lumbo_bids.training.trainer" in line for line in broken)
    assert any("lumbo_bids.geometry imports lumbo_bids.model.artifact (the pure floor" in line for line in broken)


def test_no_module_or_function_is_too_long(tmp_path):
    sizes_spec = importlib.util.spec_from_file_location("check_sizes", SCRIPT.parent / "check_sizes.py")
    check_sizes = importlib.util.module_from_spec(sizes_spec)
    sizes_spec.loader.exec_module(check_sizes)
    assert check_sizes.oversized() == []
    long = tmp_path / "pkg"
    long.mkdir()
    (long / "mod.py").write_text("def f():\n" + "    x = 1\n" * 70)
    assert check_sizes.oversized(long) == ["mod.py:1 f(): 71 lines (at most 60)"]
