"""Paths in a job script, made to mean on every node what they mean here.

A job script runs on a compute node, often with another HOME (a site's
scratch home, Grid Engine run as another user) and in another working
directory (Grid Engine starts jobs in HOME unless told ``-cwd``). A ``~`` or a
relative path left in the script is read there, and names another folder
than the one the controller wrote into: ``~/.djdask/tls`` held the campaign's
TLS files on the controller and nothing on the node. So every path djdask
puts into a job script is made absolute here, on the controller, first.
"""

from __future__ import annotations

import os

__all__ = ["controller_path"]


def controller_path(path: str | os.PathLike[str], *, node_variables: bool = False) -> str:
    """``path`` as this machine reads it: ``~`` expanded with this HOME, ``$VARIABLES`` with
    this environment, a relative path joined to this working directory.

    Parameters
    ----------
    path : str or path-like
        A path from a profile or a setting.
    node_variables : bool
        For a folder used on the node only (``local-directory``): a path that starts with a
        variable (``$TMPDIR``, each node's own scratch) is left for the node's shell.
    """
    text = os.fspath(path)
    if node_variables and text.startswith("$"):
        return text
    if not node_variables:
        text = os.path.expandvars(text)
    return os.path.abspath(os.path.expanduser(text))
