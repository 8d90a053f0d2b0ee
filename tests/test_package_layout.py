"""The package's layering, read from the sources (no import): the config at the bottom, the
synthetic example world beside the library and never imported by it."""
import ast
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
