"""The registry of selection methods: each method module registers a name, what it needs and one
`select(context) -> Groups`.

    @register("crisp", needs={"clusters"}, settings=lambda cfg: {"level": cfg.cluster.level, ...})
    def select(ctx: SelectionContext) -> Groups: ...

`needs` names the data stages the method reads beyond the windows: `embeddings` (SBERT of the pool
and of the specialist train documents, per piece), `clusters` (the tree and every window's cluster labels;
implies embeddings) and `validation_clusters` (the cluster labels of the specialist validation
windows as well; implies clusters). `settings(cfg)` returns the config values the method reads, which go into
the selection stage's cache key (with the keys of the data it needs), so changing another
method's settings never invalidates this one. `targeted` says whether the method reads the
specialist set (uniform does not: its selection is shared by every task of a pool).

Adding a method is one module that calls `register` (imported in `crisp_pl.selection.__init__`,
or from anywhere before the study runs, as a test does) plus its test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from crisp_pl.config import ConfigError, RunConfig
from crisp_pl.sampling import Groups
from crisp_pl.selection.context import SelectionContext

NEEDS = ("embeddings", "clusters", "validation_clusters")


@dataclass(frozen=True)
class Method:
    name: str
    select: Callable[[SelectionContext], Groups]
    needs: frozenset[str]
    settings: Callable[[RunConfig], dict]
    targeted: bool
    summary: str

    @property
    def needs_embeddings(self) -> bool:
        return bool(self.needs)  # clusters are fitted on the embeddings

    @property
    def needs_clusters(self) -> bool:
        return bool(self.needs & {"clusters", "validation_clusters"})

    @property
    def needs_validation_clusters(self) -> bool:
        return "validation_clusters" in self.needs


_METHODS: dict[str, Method] = {}


def register(name: str, *, needs: set[str] | frozenset[str] = frozenset(),
             settings: Callable[[RunConfig], dict] = lambda cfg: {}, targeted: bool = True):
    """Decorator: register `select(ctx) -> Groups` under `name` (its docstring's first line is the summary)."""
    unknown = set(needs) - set(NEEDS)
    if unknown:
        raise ValueError(f"method {name!r}: unknown needs {sorted(unknown)} (known: {', '.join(NEEDS)})")

    def decorate(select: Callable[[SelectionContext], Groups]):
        if name in _METHODS and _METHODS[name].select is not select:
            raise ValueError(f"a selection method named {name!r} is already registered")
        summary = (select.__doc__ or "").strip().splitlines()[0] if select.__doc__ else ""
        _METHODS[name] = Method(name, select, frozenset(needs), settings, targeted, summary)
        return select

    return decorate


def mixture_settings(cfg: RunConfig) -> dict:
    """The setting of a method that mixes a multitask's components by `task.weights` (none for a single task,
    so its key is as before multitasks existed)."""
    return {"weights": cfg.task.weights} if cfg.task.components else {}


def unregister(name: str) -> None:
    """Remove a method (tests that register a toy method clean up after themselves)."""
    _METHODS.pop(name, None)


def get_method(name: str) -> Method:
    if name not in _METHODS:
        raise ConfigError(f"selection.method must be one of {', '.join(_METHODS)}, got {name!r}")
    return _METHODS[name]


def method_names() -> list[str]:
    return list(_METHODS)
