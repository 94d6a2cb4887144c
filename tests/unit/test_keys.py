"""Dictionary keys (bundle/keys.py): one string per key, and every key the configs name is one of them."""

from __future__ import annotations

import json
from pathlib import Path

from bundle.keys import LUNG_META_KEYS, Keys

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _values() -> dict[str, str]:
    return {name: value for name, value in vars(Keys).items() if name.isupper()}


def test_each_key_is_a_distinct_string():
    values = _values()
    assert len(values) >= 10 and all(isinstance(v, str) and v for v in values.values())
    assert len(set(values.values())) == len(values), "two keys share a string: one would overwrite the other"
    assert not set(values.values()) & set(LUNG_META_KEYS)


def _named_keys(node, out: list[tuple[str, str]], path: str = "") -> None:
    """Collect the literal strings given to ``keys`` and ``*_key`` arguments (references and expressions skipped)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "keys" or k.endswith("_key"):
                for s in v if isinstance(v, list) else [v]:
                    if isinstance(s, str) and not s.startswith(("@", "%", "$")):
                        out.append((f"{path}#{k}", s))
            _named_keys(v, out, f"{path}#{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _named_keys(v, out, f"{path}#{i}")


def test_configs_name_only_defined_keys():
    found: list[tuple[str, str]] = []
    for config in sorted(CONFIGS.glob("*.json")):
        _named_keys(json.loads(config.read_text()), found, config.name)
    assert len(found) > 20, "the configs' key arguments were not found"
    defined = set(_values().values())
    undefined = [(where, s) for where, s in found if s not in defined]
    assert not undefined, f"keys named in configs but not defined in bundle/keys.py: {undefined}"
