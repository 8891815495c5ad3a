"""A caller's Python callables as scorers: ``llm.run(..., scorers={"name": function})``.

The configuration names them like the built-ins (``scorers.reward = "name"``, ``"-name"``, ``"10*name"``);
:func:`python_scorers` checks the names and wraps each callable in a :class:`PythonScorer`, whose
:func:`callable_fingerprint` keys the reference-phase cache.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from llm.scorers import HF_PREFIX, SCORERS, parse_scorer_spec

__all__ = ["PythonScorer", "ScoreFunction", "callable_fingerprint", "python_scorers"]


ScoreFunction = Callable[[Sequence[str], Sequence[str]], object]
"""A caller's scorer: ``(prompts, responses) -> one number per pair`` (an array, a list, a tensor on the CPU)."""


def callable_fingerprint(fn: object) -> str:
    """A SHA-256 that identifies what a caller's scorer computes, for the reference-phase cache key.

    ``fn.fingerprint`` (a string, or a method returning one) when the object has one: set it on a scorer whose
    scores depend on state its code does not show (a loaded model, a table in a closure). Otherwise the
    digest of its qualified name and source code (the compiled code and constants where the source is not
    available, e.g. a function defined in ``exec``) and, for a callable object, its attributes' ``repr``: the
    same code gives the same key; a ``repr`` that shows a memory address gives a new key in every process
    (the cache is then rebuilt, never reused wrongly).
    """
    explicit = getattr(fn, "fingerprint", None)
    if explicit is not None:
        value = explicit() if callable(explicit) else explicit
        return hashlib.sha256(f"fingerprint\x00{value}".encode()).hexdigest()
    function = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else type(fn)
    digest = hashlib.sha256(f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', '')}".encode())
    try:
        digest.update(inspect.getsource(function).encode())
    except (OSError, TypeError):  # no source file: the compiled code identifies it
        code = getattr(getattr(function, "__func__", function), "__code__", None)
        if code is not None:
            digest.update(code.co_code + repr((code.co_consts, code.co_names)).encode())
    closure = getattr(getattr(function, "__func__", function), "__closure__", None) or ()
    digest.update(repr([cell.cell_contents for cell in closure]).encode())
    if function is type(fn):
        digest.update(repr(sorted(vars(fn).items()) if hasattr(fn, "__dict__") else ()).encode())
    return digest.hexdigest()


class PythonScorer:
    """A caller's callable under a configuration name: ``llm.run(..., scorers={name: fn})``.

    Attributes:
        name: The name the configuration uses (``scorers.reward``, ``scorers.utilities``).
        function: The callable ``(prompts, responses) -> one number per pair``.
        fingerprint: :func:`callable_fingerprint` of the callable, taken when wrapped.
    """

    def __init__(self, name: str, function: ScoreFunction) -> None:
        """Wrap ``function`` under ``name`` (checked by :func:`python_scorers`)."""
        if not callable(function):
            raise TypeError(f"scorers[{name!r}]: {type(function).__name__} is not callable; pass a function "
                            "(prompts, responses) -> one number per pair")  # fmt: skip
        self.name = name
        self.function = function
        self.fingerprint = callable_fingerprint(function)

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Return the callable's scores as an array (a CPU tensor or list converts; :func:`score` checks them)."""
        out = self.function(list(prompts), list(responses))
        detach = getattr(out, "detach", None)  # a torch tensor
        return np.asarray(detach().cpu().numpy() if callable(detach) else out)


def python_scorers(scorers: Mapping[str, ScoreFunction]) -> dict[str, PythonScorer]:
    """Each callable wrapped under its name, after refusing the names a spec could not reach or would read otherwise.

    Raises:
        ValueError: For the name of a built-in or an ``hf:`` spec, or one a spec would read as a sign or a factor.
        TypeError: For a value that is not callable, or a name that is not a non-empty string.
    """
    wrapped = {}
    for name, function in scorers.items():
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise TypeError(f"scorers: names must be non-empty strings without outer spaces, got {name!r}")
        if name.lower() in SCORERS or name.lower().startswith(HF_PREFIX):
            raise ValueError(f"scorers[{name!r}]: the name of a built-in scorer or an hf: spec; rename yours")
        try:
            reads_as_itself = parse_scorer_spec(name, (name,)) == (1.0, name)
        except ValueError:
            reads_as_itself = False
        if not reads_as_itself:
            raise ValueError(f"scorers[{name!r}]: a leading sign or '<number>*' would be read as a factor; rename it")
        wrapped[name] = PythonScorer(name, function)
    return wrapped
