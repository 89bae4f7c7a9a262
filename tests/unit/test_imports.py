"""The import graph of djdask, built from the source: cycles between modules, and arrows from a
lower sub-package back up the layer order (issue 29; ../shared/DESIGN.md's, with the two changes
that ``LAYERS`` explains).

Imports under ``if TYPE_CHECKING:`` are for editors only and do not count; imports inside
functions do (they are how a cycle hides).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"orchestrator": "djdask", "clusters": "djdask.clusters"}

#: The sub-packages from the top (what the user runs) down (what everything builds on): an
#: import may point down this list or within a sub-package, never up.
#:
#: Two changes to the design's first order (cli, records, campaign, monitor, worker, jobs,
#: planning, storage, db, config), each because the arrows said so:
#:
#: - records below campaign and monitor: the loop opens, keeps and closes its record and keeps its
#:   accounting, the loop and the publisher notify (records.notify), and the record knows the
#:   campaign only through callbacks.  (`djdask submit`, which checks a campaign's arguments,
#:   was records.submit: it is cli.submit, with the other commands.)
#: - storage above worker: the <xarray@> codec hands the thread that runs make() its random
#:   generators (worker.randomness) into its write thread; nothing below imports storage.
LAYERS = ["cli", "campaign", "monitor", "records", "storage", "worker", "jobs", "planning", "db", "config"]


def module_names() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


def _type_checking_only(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def import_graph() -> nx.DiGraph:
    """Module -> the djdask modules it imports (the longest module prefix of each name)."""
    modules = module_names()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)) or _type_checking_only(node, parents):
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not name.startswith(target + "."):
                    graph.add_edge(name, target)
    return graph


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else None


#: Cycles still to be broken, each as its set of modules: this list may only shrink (a new
#: cycle, or a known one that grew, fails).  The structure issue found four; none is left.
KNOWN_CYCLES: list[set[str]] = []

#: Arrows up the layer order still to be removed (importer, imported sub-package): this set may
#: only shrink.  The structure issue found nine; none is left (the last, records.submit -> campaign,
#: went with the `djdask submit` command to cli.submit).
KNOWN_UPWARD: set[tuple[str, str]] = set()


def test_no_new_import_cycle():
    """A cycle makes modules importable only in some orders and hides behind imports inside
    functions; the known ones are listed above, to be broken, and none may be added."""
    cycles = [set(c) for c in nx.strongly_connected_components(import_graph()) if len(c) > 1]
    new = [sorted(c) for c in cycles if not any(c <= known for known in KNOWN_CYCLES)]
    assert not new, f"import cycles: {new}"


def test_no_new_arrow_up_the_layers():
    """A lower sub-package (jobs, db, config, ...) importing a higher one (campaign, cli, ...)
    ties the foundations to what is built on them."""
    upward = set()
    for importer, imported in import_graph().edges:
        a, b = layer(importer), layer(imported)
        if a is not None and b is not None and b < a:
            upward.add((importer, imported.split(".")[1]))
    assert upward <= KNOWN_UPWARD, sorted(upward - KNOWN_UPWARD)


def test_no_sub_package_exports_a_name_of_one_of_its_modules():
    """``from djdask.jobs import enqueue`` must give the module: a package that also exports a
    function ``enqueue`` gives the function until the module was imported, then the module."""
    for init in (ROOT / "orchestrator").glob("*/__init__.py"):
        modules = {p.stem for p in init.parent.glob("*.py")}
        tree = ast.parse(init.read_text())
        exported = set()
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
                exported = {e.value for e in node.value.elts}
        assert not exported & modules, (init.parent.name, sorted(exported & modules))


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def owner(module: str, packages: set[str]) -> str:
    """The sub-package ``module`` belongs to (``djdask.jobs`` for ``djdask.jobs.queue``,
    ``djdask.clusters`` for ``djdask.clusters.slurm``), or the top-level module itself
    (``djdask.djcompat``)."""
    package = ".".join(module.split(".")[:2])
    return package if package in packages else module


@functools.cache
def name_uses() -> tuple[tuple[str, str, str, str], ...]:
    """Each use of a name of a djdask module in djdask, its tests and its benchmarks, as
    (user, module, name, file:line): ``from djdask.x.y import name``, ``y.name`` on a module an
    import bound, a dotted string (``monkeypatch.setattr("djdask.x.y.name", ...)``, ``mock.patch``)
    and ``setattr(y, "name", ...)``."""
    modules = module_names()
    files = dict(modules)
    for folder in ("tests", "benchmarks"):
        for path in (ROOT / folder).rglob("*.py"):
            files[".".join(path.relative_to(ROOT).with_suffix("").parts)] = path

    def split(dotted: str) -> tuple[str, str] | None:
        """The longest module prefix of ``dotted`` and the one name after it."""
        parts = dotted.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            if ".".join(parts[:cut]) in modules:
                return ".".join(parts[:cut]), parts[cut]
        return None

    uses = []
    for user, path in sorted(files.items()):
        tree = ast.parse(path.read_text())
        package = user if path.stem == "__init__" else user.rsplit(".", 1)[0]
        where = path.relative_to(ROOT).as_posix()
        bound: dict[str, str] = {}  # a local name -> the djdask module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == "djdask":
                        bound[alias.asname or "djdask"] = alias.name if alias.asname else "djdask"
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                if base not in modules:
                    continue
                for alias in node.names:
                    if f"{base}.{alias.name}" in modules:
                        bound[alias.asname or alias.name] = f"{base}.{alias.name}"
                    else:
                        uses.append((user, base, alias.name, f"{where}:{node.lineno}"))

        def dotted(node: ast.AST, bound: dict[str, str] = bound) -> str | None:
            if isinstance(node, ast.Name):
                return bound.get(node.id)
            if isinstance(node, ast.Attribute):
                base = dotted(node.value, bound)
                return f"{base}.{node.attr}" if base else None
            return None

        for node in ast.walk(tree):
            hit = None
            if isinstance(node, ast.Attribute) and (name := dotted(node)):
                hit = split(name)
                hit = hit if hit and name == ".".join(hit) else None  # y.name, not y.name.attribute
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("djdask."):
                hit = split(node.value)
            elif isinstance(node, ast.Call) and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
                module, attr = dotted(node.args[0]), node.args[1].value
                hit = (module, attr) if module in modules and isinstance(attr, str) else None
            if hit and f"{hit[0]}.{hit[1]}" not in modules:
                uses.append((user, *hit, f"{where}:{node.lineno}"))
    return tuple(uses)


def private_uses() -> list[str]:
    """The private names of djdask's modules used outside their sub-package."""
    packages = {name for name, path in module_names().items() if path.stem == "__init__"}
    return [
        f"{where}: {module}.{name}"
        for user, module, name, where in name_uses()
        if _is_private(name) and owner(user, packages) != owner(module, packages)
    ]


def test_no_private_name_used_outside_its_sub_package():
    """What another sub-package or a test needs is public, exported from its package and
    documented; a private name is free to change with its module.  Tests count as outside: they
    test what the package promises, through its public names."""
    found = private_uses()
    assert not found, "\n".join(found)


@functools.cache
def exported(init: Path) -> frozenset[str]:
    """The names in the literal ``__all__`` of a package's ``__init__.py``."""
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            return frozenset(e.value for e in node.value.elts)
    return frozenset()


def test_what_another_sub_package_uses_is_exported_by_its_package():
    """A sub-package's ``__init__`` is its front door (STYLE.md): a name that another
    sub-package of djdask uses is in its package's ``__all__`` (but for a name that is also one
    of the package's modules, which the package may not export: djdask.db.connect.connect)."""
    modules = module_names()
    packages = {name for name, path in modules.items() if path.stem == "__init__"} - {"djdask"}
    missing = set()
    for user, module, name, _ in name_uses():
        package = owner(module, packages)
        if user not in modules or package not in packages or owner(user, packages) == package:
            continue
        if module != package and f"{package}.{name}" not in modules and name not in exported(modules[package]):
            missing.add(f"{module}.{name}")
    assert not missing, sorted(missing)


def test_a_package_exports_what_its_modules_name_public():
    """A package's ``_WHERE`` sends each name to the module whose ``__all__`` names it: a name
    exported from a module that keeps it out of its own ``__all__`` is public by accident."""
    for init in [*(ROOT / "orchestrator").glob("*/__init__.py"), ROOT / "clusters" / "__init__.py"]:
        for node in ast.parse(init.read_text()).body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_WHERE" for t in node.targets):
                for name, module in zip(node.value.keys, node.value.values):
                    assert name.value in exported(init.parent / f"{module.value}.py"), (init.parent.name, name.value)
