"""Reading a build config: YAML file, defaults, `--set` overrides and nulls merged, then converted to the typed
sections with key-precise errors and validated."""

from __future__ import annotations

import copy
import dataclasses
import re
import types
import typing
from typing import Any, Union

import yaml

from schemas.config.sections import BuildConfig, ConfigError
from schemas.config.validation import validate

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4,
          "ki": 1024, "mi": 1024**2, "gi": 1024**3, "ti": 1024**4}


def parse_size(text: str) -> int:
    """'1GiB' → 1073741824, '500MB' → 500000000, '123' → 123."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(text)
    unit = (m.group(2) or "").lower().rstrip("b")
    return int(float(m.group(1)) * _UNITS[unit])


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], key)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {type(value).__name__}", "write it as `key: value` lines")
        return from_dict(tp, value, key)
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value] if not isinstance(value, str) else [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {type(value).__name__}", "write a YAML list")
        return [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a mapping, got {type(value).__name__}", "write it as `name: {...}` lines")
        return {str(k): _convert(v, item, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected true or false, got {value!r}", "use true or false")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(key, f"expected an integer, got {value!r}", "give a whole number")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and key.endswith(("bytes", "_bytes")):
            try:
                return parse_size(value)
            except ValueError:
                pass
            raise ConfigError(key, f"cannot read {value!r} as a size", "give bytes or a size like 512MiB or 1GiB")
        raise ConfigError(key, f"expected an integer, got {value!r}", "give a whole number")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(key, f"expected a number, got {value!r}", "give a number such as 1.5")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(key, f"expected a string, got {value!r}", "quote the value")
    raise ConfigError(key, f"unsupported type {_type_name(tp)}", "this is a bug in the config schema")


def from_dict(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in known:
            raise ConfigError(key, "unknown key", f"known keys here: {', '.join(sorted(known))}")
        kwargs[k] = _convert(v, hints[k], key)
    missing = [f.name for f in dataclasses.fields(cls)
               if f.name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        key = f"{prefix}.{missing[0]}" if prefix else missing[0]
        raise ConfigError(key, "missing", "this key is required here")
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_override(data: dict, assignment: str) -> dict:
    """`a.b.c=value` (value read as YAML) into a nested dict."""
    if "=" not in assignment:
        raise ConfigError(assignment, "an override needs `key=value`", "write --set probe.timeout_s=120")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(key, f"cannot read value {raw!r}: {e}", "quote the value")
    node = data
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(key, f"{p} is not a section", "override a key inside a section")
    node[parts[-1]] = value
    return data


def load_yaml(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError("--config", f"file not found: {path}", "give the path of a YAML config")
    except yaml.YAMLError as e:
        raise ConfigError("--config", f"{path} is not valid YAML: {e}", "fix the YAML syntax")
    if not isinstance(data, dict):
        raise ConfigError("--config", f"{path} must hold a mapping at top level", "write `key: value` lines")
    return data


def _drop_nulls(data: dict, user: dict) -> None:
    """`null` removes a curriculum stage, a mixture stage or a mixture task. A default mixture stage whose sampling
    stage was removed goes with it; one the user configured must name a sampling stage (validate says so)."""
    stages = (data.get("sampling") or {}).get("stages")
    if isinstance(stages, dict):
        data["sampling"]["stages"] = stages = {k: v for k, v in stages.items() if v is not None}
    mix_stages = (data.get("mix") or {}).get("stages")
    if not isinstance(mix_stages, dict):
        return
    user_stages = (user.get("mix") or {}).get("stages") or {}
    kept = {}
    for name, st in mix_stages.items():
        if st is None or (name not in user_stages and isinstance(stages, dict) and name not in stages):
            continue
        if isinstance(st, dict) and isinstance(st.get("tasks"), dict):
            st = {**st, "tasks": {t: v for t, v in st["tasks"].items() if v is not None}}
        kept[name] = st
    data["mix"]["stages"] = kept


def build(data: dict, overrides: list[str] = ()) -> BuildConfig:
    """Defaults, then the file's values, then `--set` overrides. A curriculum stage, mixture stage or mixture task
    set to null is removed."""
    user = copy.deepcopy(data)
    data = merge(to_dict(BuildConfig()), data)
    for o in overrides:
        data = apply_override(data, o)
        user = apply_override(user, o)
    _drop_nulls(data, user)
    return validate(from_dict(BuildConfig, data, ""))
