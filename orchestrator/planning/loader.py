"""Import a user's pipeline module and find its DataJoint tables."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import types
from dataclasses import dataclass, field

from djdask import djcompat
from djdask.db.connect import import_datajoint
from djdask.errors import NoTablesError, PipelineImportError

__all__ = ["LoadedPipeline", "load_offline", "load_pipeline"]


@dataclass
class LoadedPipeline:
    """The table classes of an imported pipeline module.

    Attributes
    ----------
    module_name : str
        The importable name the user gave (``pipeline``, ``mylab.pipeline``).
    tables : dict
        Full table name (as the database quotes it) -> table class, for every
        declared non-part table class found in the module and its submodules, in
        the order the modules define them.
    schemas : set of str
        The database schemas those tables live in.
    """

    module_name: str
    tables: dict[str, type] = field(default_factory=dict)
    schemas: set[str] = field(default_factory=set)

    def auto_populated(self) -> dict[str, type]:
        """The Imported and Computed table classes, by full table name."""
        dj = import_datajoint()
        return {name: cls for name, cls in self.tables.items() if issubclass(cls, (dj.Imported, dj.Computed))}


def _import(module_name: str) -> types.ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(err.name + ".")):
            raise PipelineImportError(
                f"No module named {module_name!r}. Give the importable name of your pipeline "
                "package or module (for example `pipeline` or `mylab.pipeline`): install it "
                "(`pip install -e .`) or run djdask from the directory that contains it."
            ) from None
        raise PipelineImportError(
            f"Importing {module_name!r} failed because it imports {err.name!r}, which is not "
            f"installed. Install it in this environment (`pip install {err.name}`) and retry."
        ) from None
    except Exception as err:  # user code: any error is possible
        raise PipelineImportError(
            f"Importing {module_name!r} raised {type(err).__name__}: {err}. "
            "Fix the error in the pipeline code (try `python -c 'import "
            f"{module_name}'`) and retry."
        ) from None


def _modules(root: types.ModuleType) -> list[types.ModuleType]:
    """The module and, for a package, its public submodules."""
    found = [root]
    path = getattr(root, "__path__", None)
    if path is None:
        return found
    for info in pkgutil.walk_packages(path, prefix=root.__name__ + "."):
        leaf = info.name.rsplit(".", 1)[-1]
        if leaf.startswith("_") or leaf in ("tests", "test", "conftest"):
            continue
        found.append(_import(info.name))
    return found


def load_pipeline(module_name: str) -> LoadedPipeline:
    """Import ``module_name`` (and its submodules) and collect its table classes.

    Raises
    ------
    PipelineImportError
        The module cannot be imported.
    NoTablesError
        The module defines no declared DataJoint table.
    """
    dj = import_datajoint()
    tiers = (dj.Manual, dj.Lookup, dj.Imported, dj.Computed)
    loaded = LoadedPipeline(module_name)
    for module in _modules(_import(module_name)):
        # In the module's own order (its namespace keeps definition order): the order
        # DataJoint's sequential populate() follows, which some make()s rely on (djdask.planning.inputs).
        for obj in list(vars(module).values()):
            if not inspect.isclass(obj):
                continue
            if not issubclass(obj, tiers) or issubclass(obj, dj.Part) or obj in tiers:
                continue
            if getattr(obj, "database", None) is None:  # a class never bound to a schema
                continue
            loaded.tables[obj.full_table_name] = obj
            loaded.schemas.add(obj.database)
    if not loaded.tables:
        raise NoTablesError(
            f"Module {module_name!r} defines no DataJoint tables. djdask runs pipelines whose "
            "modules declare table classes with a schema (`@schema class MyTable(dj.Computed): ...`). "
            "Check that you named the pipeline package, not a helper module."
        )
    return loaded


def load_offline(module_name: str) -> dict[tuple[str, str], type]:
    """Import ``module_name`` where no database is (a compute node of a pool with
    ``database: none``): its schemas are not activated and nothing connects
    (:func:`djdask.djcompat.without_database`).  Returns its Imported and Computed table
    classes by ``(schema, table name)``, for their ``make_compute``.

    Raises
    ------
    PipelineImportError
        The module cannot be imported without a database (it connects at import).
    """
    dj = import_datajoint()
    try:
        with djcompat.without_database() as bound:
            for _module in _modules(_import(module_name)):
                pass
    except PipelineImportError as err:
        raise PipelineImportError(
            f"{err} This worker has no database access (its profile says `database: none`): a pipeline "
            "module it imports must not reach the database at import (declare schemas with "
            "`dj.Schema(name)`; no `dj.conn()`, queries or virtual modules at module level)."
        ) from None
    return {name: cls for name, cls in bound.items() if issubclass(cls, (dj.Imported, dj.Computed))}
