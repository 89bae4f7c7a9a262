"""djdask's settings, checked against their schema before a command touches anything.

The settings are the ``djdask`` namespace of Dask's config: the shipped
defaults (``djdask.yaml``), YAML files in Dask's config directories
(``~/.config/dask/*.yaml``, ``$DASK_CONFIG``) and ``DASK_DJDASK__...``
environment variables.  ``djdask-schema.yaml`` says what each one may hold
and what it means; :func:`check` holds the merged settings against it and
names, for each misfit, where it was set (file and line, or the variable),
the value seen and what would fit.  :func:`load_dask_config` turns a config
file Dask cannot read into the same kind of message.  ``djdask config``
prints the settings with their sources, and ``--markdown`` the reference in
``docs/settings.md``.
"""

from __future__ import annotations

import difflib
import functools
import math
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from djdask.errors import SettingsError

__all__ = ["check", "describe", "leaves", "load_dask_config", "markdown", "schema", "settings", "shown", "source"]

SCHEMA_PATH = Path(__file__).with_name("djdask-schema.yaml")
DEFAULTS_PATH = Path(__file__).with_name("djdask.yaml")


@functools.cache
def schema() -> dict[str, Any]:
    """The schema of the ``djdask`` namespace (``djdask-schema.yaml``)."""
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)["djdask"]


def _canonical(key: Any) -> str:
    return str(key).replace("_", "-")  # Dask takes max_attempts for max-attempts


# -- Dask's config files ------------------------------------------------------------
def load_dask_config() -> None:
    """Import Dask's config; a config file it cannot read becomes a :class:`SettingsError`
    naming the file, the line and what is wrong there."""
    try:
        # lazy: the point: Dask reads every config file when dask.config is first imported
        import dask.config  # noqa: F401
    except ValueError as err:
        found = re.search(r"config file at '(.+?)' is malformed", str(err))
        if found is None:
            raise
        raise SettingsError(_malformed(found.group(1))) from None


def _malformed(path: str) -> str:
    where, what = path, "it is malformed"
    try:
        with open(path) as f:
            loaded = yaml.safe_load(f)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        if mark is not None:
            where = f"{path}, line {mark.line + 1}, column {mark.column + 1}"
        what = f"it is not valid YAML ({err.problem or err.context})"
    except (OSError, yaml.YAMLError) as err:
        what = f"it cannot be read ({err})"
    else:
        what = f"its top level is a {type(loaded).__name__}, not a mapping of settings (name: value lines)"
    return (
        f"The Dask config file {where}: {what}. Every djdask command (and Dask itself) reads it at start. Fix it, "
        "or move it out of the way; `djdask config` then lists what is set where."
    )


# -- where a setting comes from ------------------------------------------------------
def source(path: str) -> str | None:
    """Where the setting ``path`` (``"djdask.campaign.max-attempts"``) was set: the
    environment variable, or the config file and line; None for a shipped default or a
    value set in code."""
    parts = [_canonical(p) for p in path.split(".")]
    for name in os.environ:
        named = [_canonical(p) for p in name[5:].lower().split("__")] if name.startswith("DASK_") else []
        if named and parts[: len(named)] == named:  # the setting, or a mapping holding it
            return f"environment variable {name}"
    import dask.config  # lazy: only after load_dask_config (the CLI imports this module first)

    found = [p for p in dask.config.paths_containing_key(path) if p.resolve() != DEFAULTS_PATH.resolve()]
    if not found:
        return None
    last = found[-1]  # later files win
    line = _line_of(last, parts)
    return f"{last}, line {line}" if line else str(last)


def _line_of(path: Path, parts: list[str]) -> int | None:
    try:
        with open(path) as f:
            node = yaml.compose(f)
    except (OSError, yaml.YAMLError):
        return None
    for part in parts:
        if not isinstance(node, yaml.MappingNode):
            return None
        for key, value in node.value:
            if _canonical(key.value) == part:
                line, node = key.start_mark.line + 1, value
                break
        else:
            return None
    return line


# -- the check --------------------------------------------------------------------------
def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _parsed(kind: str, value: Any) -> float | None:
    """``value`` as a number of its kind (seconds, bytes, the number itself), or None."""
    from dask.utils import parse_bytes, parse_timedelta  # lazy: it imports dask.config: after load_dask_config

    if kind in ("integer", "number"):
        if not _is_number(value) or (kind == "integer" and not isinstance(value, int)):
            return None
        return float(value)
    if _is_number(value):
        return float(value)
    if not isinstance(value, str):
        return None
    try:
        return float(parse_timedelta(value) if kind == "duration" else parse_bytes(value))
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def _fits(kind: str, spec: Mapping[str, Any], value: Any) -> bool:
    if kind == "null":
        return value is None
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str) and re.search(spec.get("pattern", ""), value) is not None
    if kind == "object":
        return isinstance(value, Mapping)
    if kind == "array":
        return isinstance(value, (list, tuple))
    number = _parsed(kind, value)
    if number is None:
        return False
    if "minimum" in spec and number < spec["minimum"]:
        return False
    if "exclusiveMinimum" in spec and number <= spec["exclusiveMinimum"]:
        return False
    return not ("maximum" in spec and number > spec["maximum"])


_WORDS = {
    "integer": "a whole number",
    "number": "a number",
    "boolean": "true or false",
    "string": "text",
    "null": "null",
    "duration": 'a duration (seconds, or e.g. "90s", "10m", "2h")',
    "bytes": 'a byte size (e.g. "512MiB", "4GB")',
    "object": "a mapping (name: value)",
    "array": "a list",
}


def describe(spec: Mapping[str, Any]) -> str:
    """What a value of ``spec`` may be, in words: ``a whole number >= 1``."""
    kinds = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
    bound = ""
    unit = {"duration": " s", "bytes": " bytes"}.get(next((k for k in kinds if k != "null"), ""), "")
    if "minimum" in spec:
        bound = f" >= {spec['minimum']:g}{unit}"
    if "exclusiveMinimum" in spec:
        bound = f" > {spec['exclusiveMinimum']:g}{unit}"
    if "maximum" in spec:
        bound += f" and <= {spec['maximum']:g}{unit}"
    if "pattern" in spec:
        bound = f" matching {spec['pattern']}"
    words = [_WORDS[k] + (bound if k not in ("null", "boolean", "object", "array") else "") for k in kinds]
    words += [repr(e) for e in spec.get("enum", [])]
    return " or ".join(words)


def _problems(value: Any, spec: Mapping[str, Any], path: str) -> Iterator[tuple[str, Any, str]]:
    """``(path, value, what fits)`` for every misfit of ``value`` under ``spec``."""
    kinds = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
    if isinstance(value, str) and value in spec.get("enum", []):
        return
    if not any(_fits(kind, spec, value) for kind in kinds):
        yield path, value, describe(spec)
        return
    if isinstance(value, (list, tuple)) and "array" in kinds and spec.get("items"):
        for i, item in enumerate(value):
            yield from _problems(item, spec["items"], f"{path}[{i}]")
        return
    if not isinstance(value, Mapping) or "object" not in kinds:
        return
    known = {_canonical(k): v for k, v in (spec.get("properties") or {}).items()}
    other = spec.get("additionalProperties")
    if not known and other is None:
        return  # checked elsewhere (a cluster profile: when a campaign uses it)
    for key, item in value.items():
        child = f"{path}.{key}"
        if _canonical(key) in known:
            yield from _problems(item, known[_canonical(key)], child)
        elif other is not None:
            yield from _problems(item, other, child)
        else:
            close = difflib.get_close_matches(_canonical(key), list(known), n=1, cutoff=0.6)
            hint = f"did you mean {path}.{close[0]}?" if close else f"known here: {', '.join(sorted(known))}"
            yield child, item, f"no setting of that name ({hint})"


def settings() -> dict[str, Any]:
    """The merged ``djdask`` namespace, as every part of djdask reads it."""
    import dask.config  # lazy: only after load_dask_config (the CLI imports this module first)

    # lazy: the shipped defaults; it imports dask.config, as above
    from djdask.config import namespace  # noqa: F401

    return dask.config.get("djdask", default={})


def _layers() -> Iterator[tuple[Path | str | None, Any]]:
    """``(where, djdask namespace)`` of each place settings come from: every config file,
    the environment, then the merged result (which also holds values set in code)."""
    import dask.config  # lazy: only after load_dask_config (the CLI imports this module first)

    for path, loaded in dask.config.collect_yaml(dask.config.paths, return_paths=True):
        if "djdask" in loaded and path.resolve() != DEFAULTS_PATH.resolve():
            yield path, loaded["djdask"]  # a list here would vanish in the merge: check it as written
    env = {k: v for k, v in os.environ.items() if k.startswith("DASK_DJDASK")}
    if env:
        yield "environment", dask.config.collect_env(env).get("djdask")
    yield None, settings()


def check(value: Any = None) -> None:
    """Raise :class:`SettingsError` naming each ``djdask.*`` setting that does not fit the
    schema: where it was set, the value seen and what would fit.

    Parameters
    ----------
    value : mapping, optional
        The namespace to check; default every config file, the environment and the
        merged settings of this process.
    """
    layers = [(None, value)] if value is not None else list(_layers())
    spec = {**schema(), "type": "object"}
    lines: dict[str, str] = {}
    for where, namespace in layers:
        for path, seen, fits in _problems(namespace, spec, "djdask"):
            if path in lines:
                continue
            if isinstance(where, Path):
                line = _line_of(where, [_canonical(p) for p in path.split(".")])
                at = f"{where}, line {line}" if line else str(where)
            else:
                at = source(path)
            where_set = f" (set in {at})" if at else ""
            if fits.startswith("no setting"):  # an unknown key: its value does not matter
                lines[path] = f"{path}{where_set} is not a setting djdask knows ({fits.split('(', 1)[1].rstrip(')')})"
            else:
                lines[path] = f"{path} is {seen!r}{where_set}: it must be {fits}"
    if not lines:
        return
    several = len(lines) > 1
    raise SettingsError(
        ("Settings do not fit: " if several else "A setting does not fit: ")
        + "; ".join(lines.values())
        + (". Fix them where they are set" if several else ". Fix it where it is set")
        + "; `djdask config` lists every setting with its meaning and default."
    )


# -- the reference ------------------------------------------------------------------------
def leaves(spec: Mapping[str, Any] | None = None, path: str = "djdask") -> Iterator[tuple[str, Mapping[str, Any]]]:
    """``(path, spec)`` of every documented setting, in schema order."""
    spec = schema() if spec is None else spec
    for key, child in (spec.get("properties") or {}).items():
        if child.get("properties") and child.get("type") == "object":
            yield from leaves(child, f"{path}.{key}")
        else:
            yield f"{path}.{key}", child


def shown(path: str, value: Any) -> Any:
    """``value`` of setting ``path`` as it may be shown: webhook URLs (their tokens) and
    passwords masked."""
    if path.endswith("notify.webhooks") and value:
        return [f"<webhook {i + 1}, hidden>" for i in range(len(value))]
    if isinstance(value, Mapping):
        return {
            k: ("********" if v and re.search(r"pass|secret|token", str(k), re.I) else shown(f"{path}.{k}", v))
            for k, v in value.items()
        }
    return value


def default(path: str) -> Any:
    """The shipped default of ``path``."""
    with open(DEFAULTS_PATH) as f:
        node: Any = yaml.safe_load(f)
    for part in path.split("."):
        node = (node or {}).get(part)
    return node


def markdown() -> str:
    """The settings reference (``docs/settings.md``), from the schema and the defaults."""
    out = [
        "# djdask settings",
        "",
        "<!-- Generated from orchestrator/djdask-schema.yaml by `djdask config --markdown`; do not edit. -->",
        "",
        "Set them in a YAML file of Dask's config (`~/.config/dask/djdask.yaml`, or the file or folder",
        "`DASK_CONFIG` names) or as environment variables (`djdask.campaign.max-attempts` is",
        "`DASK_DJDASK__CAMPAIGN__MAX_ATTEMPTS`). Every command checks them first: a value that does not",
        "fit stops it with exit code 2 and a message naming where it was set. `djdask config` shows",
        "what is set where.",
        "",
    ]
    section = None
    for path, spec in leaves():
        head = path.split(".")[1]
        if head != section:
            section = head
            out += ["", f"## `djdask.{head}`", ""] if out[-1] else [f"## `djdask.{head}`", ""]
        value = yaml.safe_dump(default(path), default_flow_style=True).strip().removesuffix("...").strip()
        out.append(f"- **`{path}`** ({describe(spec)}; default `{value}`): {spec.get('description', '').strip()}")
    return "\n".join(out) + "\n"
