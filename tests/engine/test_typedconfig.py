"""The typed-config helper: one dataclass, and validation, CLI flags, form and API schema from it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import pytest

from raftweb.typedconfig import ConfigError, TypedConfig, add_arguments, knob, values_from_args


@dataclass(frozen=True)
class Demo(TypedConfig):
    rank: int = knob(64, label="LoRA rank", min=1, max=1024, help="Adapter rank.")
    lr: float = knob(2e-4, label="Learning rate", min=0.0, max=1.0)
    method: str = knob("lora", choices=("lora", "qlora", "full"))
    packing: bool = knob(True, cli_false="--no-pack")
    limit: int | None = knob(None, min=1)
    docs: tuple[int, ...] = knob((), cli=("--documents",))


def test_it_builds_from_untrusted_input_with_types_and_bounds() -> None:
    cfg = Demo.from_dict({"rank": "16", "lr": "0.001", "packing": "off", "docs": "3, 4"})
    assert (cfg.rank, cfg.lr, cfg.packing, cfg.docs) == (16, 0.001, False, (3, 4))
    assert Demo.from_dict(cfg.to_dict()) == cfg  # round trip through JSON-ready values
    assert cfg.to_dict()["docs"] == [3, 4]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rank": 0}, "rank must be between 1 and 1024"),
        ({"rank": 2.5}, "rank: 2.5 is not a valid int"),
        ({"rank": True}, "rank: True is not a valid int"),
        ({"method": "dora"}, "method must be one of lora, qlora, full"),
        ({"packing": "maybe"}, "packing: 'maybe' is not a valid bool"),
        ({"limit": 0}, "limit must be at least 1"),
        ({"ranks": 8}, "unknown setting(s): ranks"),
    ],
)
def test_it_refuses_bad_values_naming_the_field(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        Demo.from_dict(data)
    assert message in info.value.message
    assert info.value.status == 400


def test_it_keeps_optional_fields_optional() -> None:
    assert Demo.from_dict({"limit": None}).limit is None
    assert Demo.from_dict({"limit": ""}).limit is None
    assert Demo.from_dict({"limit": "5"}).limit == 5


def test_it_makes_cli_flags_that_override_only_what_was_typed() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser, Demo)
    given = values_from_args(Demo, vars(parser.parse_args(["--rank", "8", "--no-pack"])))
    assert given == {"rank": "8", "packing": False}
    assert Demo.from_dict(given).rank == 8
    alias = values_from_args(Demo, vars(parser.parse_args(["--documents", "1,2", "--packing"])))
    assert Demo.from_dict(alias).docs == (1, 2) and alias["packing"] is True
    with pytest.raises(SystemExit):
        parser.parse_args(["--method", "dora"])
