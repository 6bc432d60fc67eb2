"""The documented example config is valid and spells out exactly the defaults."""

from pathlib import Path

from schemas import config as config_schema

EXAMPLE = Path(__file__).resolve().parents[1] / "configs" / "example.yaml"


def test_example_config_is_valid_and_matches_defaults():
    data = config_schema.load_yaml(str(EXAMPLE))
    cfg = config_schema.build(data)
    defaults = config_schema.build({"sources": data["sources"], "out": data["out"]})
    assert config_schema.to_dict(cfg) == config_schema.to_dict(defaults)
