"""The course and the lab apart: the top-level modules a student steps into never import the lab package,
the lab never imports a command, and no module imports another in a circle."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {"run"}


def imports(path):
    """The project modules `path` imports, as dotted names ('lab.results', 'models')."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | ({f"{node.module}.{a.name}" for a in node.names} if node.module == "lab" else set())
    return names


def modules():
    """{dotted name: path} of the course's modules, run.py and the lab's."""
    found = {p.stem: p for p in ROOT.glob("*.py") if p.stem != "conftest"}
    found |= {f"lab.{p.stem}": p for p in (ROOT / "lab").glob("*.py") if p.stem != "__init__"}
    return found


def test_no_course_module_imports_the_lab():
    course = {name: path for name, path in modules().items() if "." not in name and name not in COMMANDS}
    assert {"models", "utils", "recipes", "data", "from_scratch", "plots"} <= set(course)
    for name, path in course.items():
        assert not {i for i in imports(path) if i == "lab" or i.startswith("lab.")}, name


def test_the_lab_imports_no_command():
    for name, path in modules().items():
        if name.startswith("lab."):
            assert not imports(path) & COMMANDS, name


def test_no_import_cycle():
    found = modules()
    graph = {name: {i for i in imports(path) if i in found and i != name} for name, path in found.items()}
    done, visiting = set(), []

    def visit(name):
        assert name not in visiting, " -> ".join([*visiting, name])
        if name not in done:
            visiting.append(name)
            for other in graph[name]:
                visit(other)
            visiting.pop()
            done.add(name)

    for name in graph:
        visit(name)
