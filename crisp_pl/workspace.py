"""Where crisp finds studies and configs: the user's workspace first, then the built-in ones.

A workspace is a folder holding `crisp-workspace.yaml` (written by `crisp init`). Its `studies/` and
`configs/{tasks,scales,corpora}/` are looked up before the built-in ones, so a user's study may
include built-in corpora and scales by name, and a file of the same name shadows the built-in one;
its `results/` is where its studies write. The active workspace is `--workspace DIR` (the CLI sets
$CRISP_WORKSPACE), else $CRISP_WORKSPACE, else the nearest folder holding the marker from the current
folder up; with none, only the built-in files are seen and nothing of the user's is written.

The built-in files are the repository's top-level `studies/` and `configs/`: read in place in a
checkout or an editable install, and from their copies inside the wheel (`crisp_pl/_builtin/`, mapped
by pyproject.toml's package-dir) in an installed package, so git holds one copy of each.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

MARKER = "crisp-workspace.yaml"
ENV = "CRISP_WORKSPACE"
KINDS = ("studies", "configs")
BUILTIN, WORKSPACE = "built-in", "workspace"


class NoWorkspace(LookupError):
    """A command that writes the user's files found no workspace to write them into."""


def active() -> Path | None:
    """The workspace in use, or None (module docstring)."""
    chosen = os.environ.get(ENV)
    if chosen:
        folder = Path(chosen).expanduser().resolve()
        if not (folder / MARKER).is_file():
            raise NoWorkspace(f"{folder}: not a crisp workspace (no {MARKER}); create one with `crisp init {chosen}`")
        return folder
    here = Path.cwd().resolve()
    return next((folder for folder in (here, *here.parents) if (folder / MARKER).is_file()), None)


def required() -> Path:
    """The workspace, or a NoWorkspace error that says how to make one."""
    folder = active()
    if folder is None:
        raise NoWorkspace(f"no crisp workspace here ({Path.cwd()} and its parents hold no {MARKER}): "
                          f"create one with `crisp init DIR` and run from it, or pass --workspace DIR")
    return folder


def results_dir() -> Path:
    """Where results go by default: the workspace's `results/`, else `results` in the current folder."""
    folder = active()
    return folder / "results" if folder is not None else Path("results")


def builtin(kind: str) -> Path:
    """The built-in `studies` or `configs` folder: the wheel's copy, else the checkout's."""
    assert kind in KINDS, kind
    packaged = Path(str(resources.files("crisp_pl").joinpath("_builtin", kind)))
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / kind


def roots(kind: str) -> list[tuple[str, Path]]:
    """(origin, folder) of `kind` in lookup order: the workspace's, then the built-in one."""
    folder = active()
    return ([(WORKSPACE, folder / kind)] if folder is not None else []) + [(BUILTIN, builtin(kind))]


def find(kind: str, relative: str) -> Path | None:
    """The first `relative` file under the `kind` roots (a study's `corpora/builtin.yaml`), or None."""
    return next((root / relative for _, root in roots(kind) if (root / relative).is_file()), None)


def entries(kind: str, sub: str = "") -> dict[str, list[tuple[str, Path]]]:
    """Name -> [(origin, file)] of the YAML files under `kind`/`sub`, the one in use first (a workspace's
    shadows a built-in one of the same name)."""
    found: dict[str, list[tuple[str, Path]]] = {}
    for origin, root in roots(kind):
        for path in sorted((root / sub).glob("*.yaml")):
            found.setdefault(path.stem, []).append((origin, path))
    return dict(sorted(found.items()))


README = """# A crisp_pl workspace

Your studies and task presets, apart from the tool's own (`crisp study list` shows both, and where each
comes from). Run `crisp` from this folder (or pass `--workspace DIR`, or set CRISP_WORKSPACE).

- `studies/NAME.yaml`: your studies. They may include the built-in corpora and scales by name
  (`include: [corpora/builtin.yaml]`, `--scale tiny`); a study named as a built-in one shadows it here.
- `configs/tasks/NAME.yaml`: your task presets (`crisp task new NAME --from PATH --study` writes one,
  and a study to run it); `configs/scales/` and `configs/corpora/` take your own scales and corpora.
- `results/`: what your studies write: the MLflow store (`crisp ui`), the stage cache, the figures.
"""


def init(folder: Path) -> list[Path]:
    """Make `folder` a workspace (idempotent: existing files are kept); returns what was written."""
    folder = folder.expanduser().resolve()
    written = []
    for sub in ("studies", "configs/tasks", "configs/scales", "configs/corpora", "results"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    for name, text in ((MARKER, "# a crisp_pl workspace: crisp finds its studies/ and configs/ before the built-in ones\n"),
                       ("README.md", README)):
        if not (folder / name).exists():
            (folder / name).write_text(text)
            written.append(folder / name)
    return written
