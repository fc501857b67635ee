"""The Django faces of a typed config: the generated form and the API schema."""

from __future__ import annotations

import pytest

from tests.engine.test_typedconfig import Demo


def test_it_makes_a_form_with_the_same_bounds_and_labels(db: object) -> None:
    from raftweb.core.typedforms import config_form

    form_class = config_form(Demo)
    form = form_class(data={"rank": "2000", "method": "lora", "lr": "0.1"})
    assert not form.is_valid() and "rank" in form.errors
    assert form_class().fields["rank"].label == "LoRA rank"
    assert form_class().fields["rank"].help_text == "Adapter rank."
    ok = form_class(data={"rank": "8", "method": "full", "lr": "0.1", "docs": "7"})
    assert ok.is_valid(), ok.errors
    config = ok.config()
    assert config["rank"] == 8 and config["method"] == "full" and config["docs"] == [7]
    assert config["packing"] is False  # an unticked checkbox is False, as a person means it


def test_it_makes_an_api_schema_documented_like_the_config_and_validated_by_it() -> None:
    from raftweb.core.typedforms import config_schema, config_values
    from raftweb.typedconfig import ConfigError

    schema = config_schema(Demo)
    assert schema().rank == 64  # omitted = the default
    assert config_values(schema(rank=8)) == {"rank": 8}
    props = schema.model_json_schema()["properties"]
    assert props["rank"]["title"] == "LoRA rank" and props["rank"]["maximum"] == 1024
    assert props["method"]["enum"] == ["lora", "qlora", "full"]
    # Values pass through to the config, which refuses them with its own message.
    with pytest.raises(ConfigError, match="rank must be between 1 and 1024"):
        Demo.from_dict(config_values(schema(rank=0)))
    with pytest.raises(ConfigError, match="unknown setting"):
        Demo.from_dict(config_values(schema(ranks=8)))
