"""Read queries that the ORM compiles once per process and that then run with a new value.

Why: building and compiling a queryset costs far more than running it. An API request's token
check (the token, its user and the user's role groups) took 0.73 ms of ORM work for two
queries that SQLite answers in 0.03 ms, and under 200 concurrent searches that Python held the
GIL the whole web process shares. The queryset stays the one definition of the query (the
"active token" rule lives in its manager, not in SQL written here); only its compiled SQL,
parameters and result converters are kept.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import connections
from django.db.models import QuerySet


def _slot(i: int, kind: type) -> Any:
    """Stands for value ``i`` in the compiled parameters: a value no real one equals (NUL bytes
    in a text, an integer far below any id), of the type the field's lookup accepts."""
    if kind is int:
        return -(2**62) - i
    return f"\x00raftweb-prepared-value-{i}\x00"


class PreparedQuery:
    """``build(*values)`` must return a ``values_list`` queryset that uses each of its values
    once (``kinds``: their types, ``str`` or ``int``); :meth:`rows` runs its SQL, compiled on
    first use per database engine, with other values."""

    def __init__(
        self,
        build: Callable[..., QuerySet[Any]],
        *,
        kinds: tuple[type, ...] = (str,),
        using: str = "default",
    ) -> None:
        self.build = build
        self.kinds = kinds
        self.using = using
        # Per database engine. Two threads compiling at once both store the same result.
        self._compiled: dict[str, tuple[str, tuple[Any, ...], list[int], Any, list[Any]]] = {}

    def _compile(self) -> tuple[str, tuple[Any, ...], list[int], Any, list[Any]]:
        key = connections[self.using].vendor  # the SQL differs by database engine only
        compiled = self._compiled.get(key)
        if compiled is None:
            marks = [_slot(i, kind) for i, kind in enumerate(self.kinds)]
            compiler = self.build(*marks).query.get_compiler(using=self.using)
            sql, params = compiler.as_sql()
            slots = [[i for i, p in enumerate(params) if p == mark] for mark in marks]
            if any(len(found) != 1 for found in slots):
                raise ValueError("the prepared query must use each of its values exactly once")
            fields = [s[0] for s in compiler.select[: compiler.col_count]]
            positions = [found[0] for found in slots]
            compiled = (sql, tuple(params), positions, compiler, compiler.get_converters(fields))
            self._compiled[key] = compiled
        return compiled

    def rows(self, *values: Any) -> list[tuple[Any, ...]]:
        """The rows of ``build(*values)``, as its ``values_list`` would give them."""
        if len(values) != len(self.kinds):
            raise TypeError(f"the prepared query takes {len(self.kinds)} value(s)")
        sql, params, positions, compiler, converters = self._compile()
        bound = list(params)
        for position, value in zip(positions, values, strict=True):
            bound[position] = value
        with connections[self.using].cursor() as cursor:
            cursor.execute(sql, bound)
            rows = cursor.fetchall()
        if converters:  # e.g. SQLite's datetimes and booleans, as the ORM would convert them
            rows = [tuple(r) for r in compiler.apply_converters(rows, converters)]
        return rows
