"""The package's layering, read from the sources: the config and mdetr_d2.structures at the bottom;
modeling, data and evaluation beside each other above them; the synthetic example world beside the
library and never imported by it."""
import ast
import importlib
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "mdetr_d2"


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(absolute module name, imported inside a function) of every import in ``path``."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            local = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - child.level + 1]
                module = child.module or ""
                name = ".".join(base + [module] if module else base) if child.level else module
                found.append((name, in_function))
            visit(child, local)

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


def test_library_never_imports_the_synthetic_world():
    """mdetr_synthetic imports mdetr_d2, never the other way: importing the library registers
    no synthetic dataset."""
    offenders = [f"{p.relative_to(REPO)}: {name}" for p in sorted(LIBRARY.rglob("*.py"))
                 for name, _ in _imports(p) if name.split(".")[0] == "mdetr_synthetic"]
    assert not offenders, offenders


def test_config_is_the_bottom_layer():
    """mdetr_d2/config.py holds every key and imports only Detectron2's CfgNode, at the top."""
    imports = _imports(LIBRARY / "config.py")
    assert imports == [("detectron2.config", False)], imports
    assert not (LIBRARY / "data" / "config.py").exists()
    assert not (LIBRARY / "engine" / "config.py").exists()


# The three middle layers: each may import the structures layer (and the config), never another.
MIDDLE_LAYERS = ("modeling", "data", "evaluation")
# (file, imported module) pairs allowed to break the rule: none left.
KNOWN_CROSS_LAYER_IMPORTS: set[tuple[str, str]] = set()
# What the structures layer may import besides the standard library and itself.
STRUCTURES_DEPENDENCIES = {"torch", "transformers", "huggingface_hub", "detectron2"}
# Function-local imports kept on purpose: optional or heavy dependencies of one code path.
ALLOWED_LOCAL_IMPORTS = {
    ("mdetr_d2/modeling/backbone.py", "timm"),  # only the EfficientNet backbones, ~0.7 s to import
    ("mdetr_d2/evaluation/lvis_fixed_ap.py", "lvis"),  # optional: only the LVIS evaluation
    ("mdetr_d2/export/runtime.py", "onnxruntime"),  # optional ("export" extra): ONNX exports only
}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "mdetr_d2" and len(parts) > 1 else None


def test_modeling_data_and_evaluation_never_import_each_other():
    """The middle layers share what they need through mdetr_d2.structures only: an import from one
    of them into another (at the top or inside a function) fails here, naming the file."""
    offenders = set()
    for layer in MIDDLE_LAYERS:
        for path in sorted((LIBRARY / layer).rglob("*.py")):
            for name, _ in _imports(path):
                target = _layer(name)
                if target in MIDDLE_LAYERS and target != layer:
                    offenders.add((str(path.relative_to(REPO)), name))
    assert offenders == KNOWN_CROSS_LAYER_IMPORTS, sorted(offenders - KNOWN_CROSS_LAYER_IMPORTS)


def test_structures_is_the_bottom_layer():
    """mdetr_d2.structures imports only the standard library, torch, transformers (and its hub
    client) and Detectron2: no other mdetr_d2 package."""
    offenders = []
    for path in sorted((LIBRARY / "structures").rglob("*.py")):
        for name, _ in _imports(path):
            top = name.split(".")[0]
            inside = name.startswith("mdetr_d2.structures")
            if not inside and top not in STRUCTURES_DEPENDENCIES | set(sys.stdlib_module_names):
                offenders.append(f"{path.relative_to(REPO)}: {name}")
    assert not offenders, offenders


def test_no_function_local_imports_in_the_library():
    """Imports sit at the top of their module (a loop between packages cannot hide in a function),
    except the optional / single-use heavy dependencies listed with their reason."""
    local = {(str(p.relative_to(REPO)), name.split(".")[0])
             for p in sorted(LIBRARY.rglob("*.py")) for name, in_function in _imports(p) if in_function}
    assert local == ALLOWED_LOCAL_IMPORTS, sorted(local ^ ALLOWED_LOCAL_IMPORTS)


def test_shared_concepts_live_in_structures_only():
    """No re-export shim: the shared names are defined in mdetr_d2.structures and the other
    packages neither define nor re-export them."""
    shared = ("build_tokenizer", "encode_caption", "max_caption_tokens", "create_positive_map",
              "span_to_token_range", "spans_to_tensor", "tensor_to_spans", "tied_spans",
              "encode_gqa_answer", "encode_clevr_answer", "load_qa_vocab", "GQA_ANSWER_TYPES",
              "CLEVR_ATTRIBUTES", "CLEVR_ANSWER_TYPES", "MAX_TOKEN_SLOTS", "TextEncoderNotFound",
              "tokenize_captions")
    for layer in MIDDLE_LAYERS:
        package = importlib.import_module(f"mdetr_d2.{layer}")
        assert not [n for n in shared if hasattr(package, n)], layer
    for path in sorted(LIBRARY.rglob("*.py")):
        if path.parent.name == "structures":
            continue
        tree = ast.parse(path.read_text(), str(path))
        defined = [n.name if not isinstance(n, ast.Assign) else n.targets[0].id
                   for n in tree.body
                   if isinstance(n, (ast.FunctionDef, ast.ClassDef))
                   or (isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name))]
        assert not set(defined) & set(shared), (path, set(defined) & set(shared))


TOOLS = REPO / "tools"
# The only module of tools/ that may reach the official MDETR code (benchmark comparisons).
OFFICIAL_ADAPTER = TOOLS / "benchmarking" / "official.py"
# Top-level modules of an official MDETR checkout (importable only once its root is on sys.path).
OFFICIAL_MODULES = {"models", "util", "datasets", "engine", "main", "hubconf"}
# Other sys.path edits in tools/, each with its reason.
SYS_PATH_EDITS_ALLOWED = {
    TOOLS / "synthetic_job.py": "imports the sibling script tools/train_net.py",
}


def _run_time_edits(path: Path) -> list[str]:
    """Run-time edits of imported modules in ``path``: ``sys.path`` changes, and attributes set or
    deleted on an imported module (``setattr(torchvision.models, ...)``, ``mod.attr = ...``)."""
    tree = ast.parse(path.read_text(), str(path))
    imported = {(alias.asname or alias.name).split(".")[0] for node in ast.walk(tree)
                if isinstance(node, (ast.Import, ast.ImportFrom)) for alias in node.names}

    def root(node: ast.AST) -> str | None:
        while isinstance(node, (ast.Attribute, ast.Subscript)):
            node = node.value
        return node.id if isinstance(node, ast.Name) else None

    edits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and ast.unparse(func.value) == "sys.path":
                edits.append(ast.unparse(node))
            elif (isinstance(func, ast.Name) and func.id in ("setattr", "delattr") and node.args
                  and root(node.args[0]) in imported):
                edits.append(ast.unparse(node))
        targets = (node.targets if isinstance(node, (ast.Assign, ast.Delete))
                   else [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
        edits.extend(ast.unparse(t) for t in targets
                     if isinstance(t, (ast.Attribute, ast.Subscript)) and root(t) in imported)
    return edits


def test_only_the_official_adapter_reaches_the_official_code():
    """tools/benchmarking/official.py alone edits sys.path for the official MDETR code, patches
    modules at run time and imports the official packages (inside its methods: they import only
    once their root is on sys.path); no other module of tools/ does, and the benchmark's modules
    import nothing else inside functions."""
    adapter_edits = _run_time_edits(OFFICIAL_ADAPTER)
    # The check sees the adapter's own edits: it can fail.
    assert any(e.startswith("sys.path.insert(") for e in adapter_edits), adapter_edits
    assert any(e.startswith("setattr(torchvision.models") for e in adapter_edits), adapter_edits
    adapter_imports = {name.split(".")[0] for name, local in _imports(OFFICIAL_ADAPTER) if local}
    assert adapter_imports == {"models", "util"}, adapter_imports

    offenders = []
    for path in sorted(TOOLS.rglob("*.py")):
        if path == OFFICIAL_ADAPTER:
            continue
        where = path.relative_to(REPO)
        edits = _run_time_edits(path)
        if path in SYS_PATH_EDITS_ALLOWED:
            edits = [e for e in edits if not e.startswith("sys.path.")]
        offenders += [f"{where}: edits {e}" for e in edits]
        offenders += [f"{where}: imports the official {name}" for name, _ in _imports(path)
                      if name.split(".")[0] in OFFICIAL_MODULES]
        if path.parent.name == "benchmarking" or path.name == "benchmark.py":
            offenders += [f"{where}: imports {name} in a function" for name, local in _imports(path)
                          if local]
    assert not offenders, offenders
