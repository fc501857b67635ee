"""One registry shape for every pluggable part: parsers, chunkers, and later backends, stores,
exporters.

Pluggable parts are chosen by name (a setting, a form field, a file type), never by if-chains.
Every such choice goes through a :class:`Registry`, so a bad name fails the same way everywhere:
an :class:`UnknownChoice` whose message names the kind and the valid choices, e.g.
``unknown chunker 'foo'; choose one of: record, token``.

Usage::

    chunkers: Registry[Chunker] = Registry("chunker")

    @chunkers.register("token", "window")        # canonical name, then aliases
    class TokenWindowChunker(Chunker): ...

    chunkers.add("record", RecordChunker())      # or register an object directly
    chunkers.add_lazy("fancy", "myplugin.fancy") # imported (and so registered) on first use
    chunkers.get("token")                        # -> TokenWindowChunker (aliases work too)
    chunkers.names()                             # -> ["token", "record", "fancy"]

The registry stores exactly what it is given (a class, an instance, a function); whether an
entry is instantiated once or per use is the owner's decision. Like a ``dict``, iterating a
registry yields its canonical names, in registration order; :meth:`Registry.values` and
:meth:`Registry.items` yield the objects. This module is engine code: no Django.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")
D = TypeVar("D")  # what a decorator receives and hands back unchanged

__all__ = ["Registry", "UnknownChoice"]


class UnknownChoice(KeyError):
    """A name that is not registered.

    It is a ``KeyError`` (hence a ``LookupError``) so code that caught the ``KeyError`` of the
    plain dicts these registries replace keeps working; ``str()`` is the plain message, not
    ``KeyError``'s quoted repr, because it is shown to users.
    """

    def __init__(
        self, kind: str, name: str, choices: list[str], *, setting: str | None = None
    ) -> None:
        self.kind = kind
        self.name = name
        self.choices = choices
        self.setting = setting
        where = f" in {setting}" if setting else ""
        valid = ", ".join(choices) if choices else f"(no {kind} is registered)"
        self.message = f"unknown {kind} {name!r}{where}; choose one of: {valid}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        # Exceptions pickle as ``cls(*args)``; ours takes different arguments (worker processes
        # send errors back to their parent).
        return (_rebuild_unknown_choice, (self.kind, self.name, self.choices, self.setting))


def _rebuild_unknown_choice(
    kind: str, name: str, choices: list[str], setting: str | None
) -> UnknownChoice:
    return UnknownChoice(kind, name, choices, setting=setting)


class Registry(Generic[T]):
    """Named objects of one kind, with aliases and lazily imported built-ins.

    ``kind`` is the singular noun used in error messages ("parser", "chunker", "backend").
    Registration is thread-safe; it normally happens at import time.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}  # canonical name -> object, in registration order
        self._aliases: dict[str, str] = {}  # alias -> canonical name
        self._lazy: dict[str, str] = {}  # canonical name -> module that registers it on import
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"Registry[{self.kind}]({', '.join(self.names())})"

    # ------------------------------------------------------------------ registration
    def add(self, name: str, obj: T, *aliases: str, replace: bool = False) -> T:
        """Register ``obj`` as ``name`` (plus ``aliases``) and return it.

        Taking a name that is already registered to a different object raises ``ValueError``
        (two plugins fighting over a name is a bug to see, not to resolve silently) unless
        ``replace`` is true; registering the same object again is a no-op.
        """
        if not name:
            raise ValueError(f"a {self.kind} needs a non-empty name")
        with self._lock:
            current = self._entries.get(name)
            if current is not None and current is not obj and not replace:
                raise ValueError(f"{self.kind} name {name!r} is already taken by {current!r}")
            for alias in aliases:
                self._check_free(alias, name, replace=replace)
            if name in self._aliases and not replace:
                target = self._aliases[name]
                raise ValueError(f"{self.kind} name {name!r} is already an alias of {target!r}")
            self._aliases.pop(name, None)
            self._entries[name] = obj
            self._lazy.pop(name, None)
            for alias in aliases:
                if alias != name:
                    self._aliases[alias] = name
        return obj

    def register(self, name: str, *aliases: str, replace: bool = False) -> Callable[[D], D]:
        """Decorator form of :meth:`add`: ``@registry.register("name", "alias")``.

        The decorated object itself is registered and returned unchanged.
        """
        if not isinstance(name, str):  # the bare ``@registry.register`` form of older code
            raise TypeError(f"register() takes the {self.kind}'s name: @registry.register('name')")

        def decorator(obj: D) -> D:
            self.add(name, obj, *aliases, replace=replace)  # type: ignore[arg-type]
            return obj

        return decorator

    def add_lazy(self, name: str, module: str) -> None:
        """Announce ``name`` as provided by ``module``, imported on first :meth:`get`.

        Importing the module must register ``name``. This keeps optional, heavy built-ins
        (torch, HTTP clients) out of ``import`` time while still listing them as choices.
        """
        with self._lock:
            if name not in self._entries:
                self._lazy[name] = module

    def remove(self, name: str) -> T | None:
        """Unregister ``name`` and its aliases (plugins and tests that come and go)."""
        with self._lock:
            name = self._aliases.get(name, name)
            self._lazy.pop(name, None)
            for alias in [a for a, target in self._aliases.items() if target == name]:
                del self._aliases[alias]
            return self._entries.pop(name, None)

    def _check_free(self, alias: str, name: str, *, replace: bool) -> None:
        if replace or alias == name:
            return
        target = self._aliases.get(alias)
        if target is not None and target != name:
            raise ValueError(f"{self.kind} alias {alias!r} already points to {target!r}")
        if alias in self._entries:
            raise ValueError(f"{self.kind} alias {alias!r} is already a {self.kind} name")

    # ------------------------------------------------------------------ lookup
    def get(self, name: str, *, setting: str | None = None) -> T:
        """The object registered as ``name`` (or an alias of it).

        On a miss raises :class:`UnknownChoice` naming the valid choices; ``setting`` (e.g.
        ``"RAFTWEB_CHUNKER"``) says in the message where the bad name came from.
        """
        canonical = self._aliases.get(name, name)
        try:
            return self._entries[canonical]
        except KeyError:
            pass
        module = self._lazy.get(canonical)
        if module is not None:
            with self._lock:
                importlib.import_module(module)
                if canonical in self._entries:
                    return self._entries[canonical]
            raise LookupError(f"importing {module} did not register {self.kind} {canonical!r}")
        raise UnknownChoice(self.kind, name, sorted(self.names()), setting=setting) from None

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def canonical(self, name: str) -> str:
        """The canonical name for ``name`` or one of its aliases (raises on a miss)."""
        canonical = self._aliases.get(name, name)
        if canonical not in self._entries and canonical not in self._lazy:
            raise UnknownChoice(self.kind, name, sorted(self.names()))
        return canonical

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        canonical = self._aliases.get(name, name)
        return canonical in self._entries or canonical in self._lazy

    def names(self) -> list[str]:
        """Canonical names (lazy ones included), in registration order; aliases are not listed."""
        return list(self._entries) + [n for n in self._lazy if n not in self._entries]

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def values(self) -> list[T]:
        """The registered objects in registration order (lazy entries are not imported)."""
        return list(self._entries.values())

    def items(self) -> list[tuple[str, T]]:
        """``(canonical name, object)`` pairs in registration order (lazy ones not imported)."""
        return list(self._entries.items())
