"""The one place that loads configuration.

`conf/base.yaml` is both the defaults and the schema: every key a job may read is declared there,
with a value whose type the overlays must keep. Overlays (`conf/local.yaml`, `conf/s3-local.yaml`,
`conf/aws.yaml`, ...) and `--set key=value` overrides are applied on top, in order. Validation
fails fast, naming the key and the file at fault:

- a key that base.yaml does not declare is unknown (a typo would otherwise be ignored silently);
- a value whose type differs from base.yaml's is wrong (an int is accepted where a float is declared,
  and a key declared `null` in base takes a string or null);
- a value still equal to `???` after all overlays is missing.

A mapping declared empty (`{}`) in base.yaml is free-form (for example `spark.extra`), so any
key below it is accepted. String values may reference environment variables as `${VAR}` or
`${VAR:-default}`; secrets only ever come in this way, never as literals in a conf file.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONF_DIR = PROJECT_ROOT / "conf"
BASE_CONF = CONF_DIR / "base.yaml"
MISSING = "???"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfError(ValueError):
    """A configuration problem; the message names the key, the file and the fix."""


class Conf(Mapping):
    """Validated, merged configuration with dotted-key access (`conf["lake.root"]`)."""

    def __init__(self, data: dict, sources: list[str]):
        self._data = data
        self.sources = sources

    def __getitem__(self, dotted: str) -> Any:
        node: Any = self._data
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"conf has no key '{dotted}' (declare it in {BASE_CONF.relative_to(PROJECT_ROOT)})")
            node = node[part]
        return copy.deepcopy(node)

    def __iter__(self):
        return iter(_flatten(self._data))

    def __len__(self) -> int:
        return len(_flatten(self._data))

    def path(self, dotted: str) -> str:
        """A location from conf: URIs (s3a://, file://) as they are, local paths made absolute.

        Relative local paths are taken relative to the repository root, so a job behaves the same
        whatever the current directory of whoever launched it.
        """
        value = self[dotted]
        if not isinstance(value, str) or not value.strip():
            raise ConfError(
                f"'{dotted}' is empty (from {', '.join(self.sources)}): set it to a folder or an s3a:// URI; "
                f"an empty value would silently mean the repository folder"
            )
        return resolve_location(value)

    def as_dict(self) -> dict:
        return copy.deepcopy(self._data)

    def with_overrides(self, overrides: Iterable[str]) -> "Conf":
        """A copy with more `key=value` overrides applied and validated."""
        files = [s for s in self.sources[1:] if not s.startswith("--set ")]
        return load_conf(files, overrides=[*_source_overrides(self), *overrides])


def resolve_location(value: str) -> str:
    if "://" in value:
        return value.rstrip("/")
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = PROJECT_ROOT / path
    return str(path.resolve())


def is_remote(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def _flatten(node: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _source_overrides(conf: Conf) -> list[str]:
    return [s[len("--set ") :] for s in conf.sources if s.startswith("--set ")]


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfError(f"conf file '{path}' does not exist (pass an existing file to --conf)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfError(f"conf file '{path}' is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfError(f"conf file '{path}' must hold a mapping at its top level, not {type(data).__name__}")
    return data


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _compatible(declared: Any, value: Any) -> bool:
    if value == MISSING:
        return True
    if declared is None or declared == MISSING:
        return value is None or isinstance(value, (str, int, float, bool))
    if isinstance(declared, bool):
        return isinstance(value, bool)
    if isinstance(declared, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(declared, int):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, type(declared))


def _merge(base: dict, overlay: dict, source: str, schema: dict, prefix: str = "") -> None:
    for key, value in overlay.items():
        dotted = f"{prefix}{key}"
        if not isinstance(key, str):
            raise ConfError(f"{source}: key {key!r} under '{prefix[:-1] or '<top>'}' must be a string")
        if key not in schema:
            raise ConfError(
                f"{source}: unknown key '{dotted}' (not declared in conf/base.yaml; check the spelling "
                f"or declare it there with its default)"
            )
        declared = schema[key]
        if isinstance(declared, dict) and declared:
            if not isinstance(value, dict):
                raise ConfError(f"{source}: '{dotted}' must be a mapping, got {_type_name(value)} {value!r}")
            _merge(base[key], value, source, declared, dotted + ".")
        elif isinstance(declared, dict):  # declared {}: free-form mapping
            if not isinstance(value, dict):
                raise ConfError(f"{source}: '{dotted}' must be a mapping, got {_type_name(value)} {value!r}")
            base[key] = {**base[key], **value}
        else:
            if not _compatible(declared, value):
                raise ConfError(
                    f"{source}: '{dotted}' must be {_type_name(declared)} (as in conf/base.yaml), "
                    f"got {_type_name(value)} {value!r}"
                )
            if isinstance(declared, float) and isinstance(value, int):
                value = float(value)
            base[key] = value


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfError(f"--set '{item}' must look like key=value, for example --set lake.root=/tmp/lake")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfError(f"--set '{item}' has an empty key")
    value = yaml.safe_load(raw) if raw.strip() else ""
    return key, value


def _nest(dotted: str, value: Any) -> dict:
    node: dict = {}
    cursor = node
    parts = dotted.split(".")
    for part in parts[:-1]:
        cursor[part] = {}
        cursor = cursor[part]
    cursor[parts[-1]] = value
    return node


def _interpolate(node: Any, dotted: str = "") -> Any:
    if isinstance(node, dict):
        return {k: _interpolate(v, f"{dotted}.{k}" if dotted else k) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, dotted) for v in node]
    if isinstance(node, str):

        def replace(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ and os.environ[name] != "":
                return os.environ[name]
            if default is not None:
                return default
            raise ConfError(f"'{dotted}' references environment variable {name}, which is not set; export it")

        return _ENV_REF.sub(replace, node)
    return node


def _check_missing(node: dict, sources: list[str], prefix: str = "") -> None:
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            _check_missing(value, sources, dotted + ".")
        elif value == MISSING:
            raise ConfError(
                f"'{dotted}' has no value (declared '???' in conf/base.yaml and not set by "
                f"{', '.join(sources[1:]) or 'any overlay'}); set it in a conf file or with --set {dotted}=..."
            )


def load_conf(files: Iterable[str | os.PathLike] = (), overrides: Iterable[str] = ()) -> Conf:
    """Load conf/base.yaml, then each overlay file, then each `key=value` override, validated."""
    schema = _read_yaml(BASE_CONF)
    data = copy.deepcopy(schema)
    sources = [str(BASE_CONF.relative_to(PROJECT_ROOT))]
    for file in files:
        path = Path(file)
        if not path.is_absolute() and not path.exists():
            path = PROJECT_ROOT / path
        _merge(data, _read_yaml(path), str(file), schema)
        sources.append(str(file))
    for item in overrides:
        key, value = _parse_override(item)
        _merge(data, _nest(key, value), f"--set {key}", schema)
        sources.append(f"--set {item}")
    data = _interpolate(data)
    _check_missing(data, sources)
    return Conf(data, sources)
