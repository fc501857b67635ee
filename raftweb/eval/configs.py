"""Evaluation configuration strings: ``emb=base,gen=active[,mode=dense][,k=5]``.

A configuration names the embedding version retrieval searches (``base``, ``active``,
``version:<id or label>``), the generator (``base``, ``active``, ``version:<id>``,
``profile:<role>``), and optionally its own retrieval mode and k (else the run's).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from raftweb.errors import Invalid

MODES = ("hybrid", "dense", "bm25")
DEFAULT_MODE = "hybrid"
DEFAULT_K = 5
MAX_K = 50
_EMB_FORMS = "base, active or version:<id>"
_GEN_FORMS = "base, active, version:<id> or profile:<role>"


@dataclass(frozen=True, slots=True)
class EvalConfig:
    emb: str = "active"
    gen: str = "active"
    mode: str | None = None  # None: the run's mode
    k: int | None = None  # None: the run's k

    @property
    def label(self) -> str:
        """The canonical string (what the command prints and the dashboard heads columns with)."""
        parts = [f"emb={self.emb}", f"gen={self.gen}"]
        if self.mode is not None:
            parts.append(f"mode={self.mode}")
        if self.k is not None:
            parts.append(f"k={self.k}")
        return ",".join(parts)

    def as_dict(self) -> dict[str, object]:
        return {"emb": self.emb, "gen": self.gen, "mode": self.mode, "k": self.k}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> EvalConfig:
        k = data.get("k")
        mode = data.get("mode")
        return cls(
            emb=str(data.get("emb") or "active"),
            gen=str(data.get("gen") or "active"),
            mode=str(mode) if mode else None,
            k=int(k) if isinstance(k, int | str) and str(k).isdigit() else None,
        )


def parse_config(text: str) -> EvalConfig:
    """Parse one ``key=value,...`` string; raises :class:`Invalid` naming what is wrong."""
    values: dict[str, str] = {}
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key, value = key.strip().lower(), value.strip()
        if not sep or not value:
            raise Invalid(f"Configuration {text!r}: {part!r} is not key=value.")
        if key not in ("emb", "gen", "mode", "k"):
            raise Invalid(f"Configuration {text!r}: unknown key {key!r}; use emb, gen, mode, k.")
        if key in values:
            raise Invalid(f"Configuration {text!r}: {key} is given twice.")
        values[key] = value
    if not values:
        raise Invalid("An empty configuration: write e.g. emb=base,gen=base.")
    emb = values.get("emb", "active")
    gen = values.get("gen", "active")
    if not (emb in ("base", "active") or _named(emb, "version:")):
        raise Invalid(f"Configuration {text!r}: emb must be {_EMB_FORMS}, not {emb!r}.")
    if not (gen in ("base", "active") or _named(gen, "version:") or _named(gen, "profile:")):
        raise Invalid(f"Configuration {text!r}: gen must be {_GEN_FORMS}, not {gen!r}.")
    mode = values.get("mode")
    if mode is not None and mode not in MODES:
        raise Invalid(f"Configuration {text!r}: mode must be one of {', '.join(MODES)}.")
    k = values.get("k")
    if k is not None and not (k.isdigit() and 1 <= int(k) <= MAX_K):
        raise Invalid(f"Configuration {text!r}: k must be a whole number from 1 to {MAX_K}.")
    return EvalConfig(emb=emb, gen=gen, mode=mode, k=int(k) if k is not None else None)


def parse_configs(texts: Sequence[str]) -> list[EvalConfig]:
    """Parse several; duplicates (same canonical label) are an error, not silently merged."""
    configs = [parse_config(t) for t in texts]
    if not configs:
        raise Invalid("Give at least one configuration, e.g. --config emb=base,gen=base.")
    labels = [c.label for c in configs]
    dupes = sorted({label for label in labels if labels.count(label) > 1})
    if dupes:
        raise Invalid(f"Configuration given twice: {', '.join(dupes)}.")
    return configs


def _named(value: str, prefix: str) -> bool:
    return value.startswith(prefix) and bool(value.removeprefix(prefix).strip())
