"""Content-addressed stage cache: each stage's output is a folder named by a hash of its inputs.

    results/cache/<stage>/<key>/          finished output (present only once complete)
    results/cache/<stage>/<key>.partial/  work in progress; kept on failure so a rerun resumes

A stage is done exactly when its final folder exists; it appears through one `os.replace` of the
partial folder, so a killed run never leaves a half-written output that looks finished. Stages
that can resume (embedding shards, training checkpoints) keep their progress in the partial folder.

Every finished folder carries `manifest.json`, each file's size at the moment it was finished. A
folder damaged since (a file truncated or deleted by a full disk, a bad copy, a hand) no longer
matches it: it is never read, but moved aside to `KEY.damaged-N/` (kept for inspection) and
rebuilt. Folders finished before manifests existed are taken as they are.

Several processes may share one results folder (two studies, or the ranks of one DDP run): a
stage is built under an exclusive lock on `<key>.lock`, so one process builds it while the others
wait and then read the finished folder instead of racing on the same partial folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crisp_pl.config import stable_hash
from crisp_pl.distributed import is_worker


@dataclass(frozen=True)
class CacheEntry:
    """A finished stage output: its name, its cache key and its folder."""

    name: str
    key: str
    path: Path

    @property
    def seconds(self) -> float:
        """Wall time of the build that finished this stage (its last attempt, when it was resumed)."""
        record = self.path / "stage.json"
        return float(json.loads(record.read_text())["seconds"]) if record.is_file() else 0.0


class StageCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def lookup(self, stage: str, inputs: Any) -> CacheEntry | None:
        key = stable_hash(inputs)
        path = self.path(stage, key)
        return CacheEntry(stage, key, path) if is_finished(path) else None

    def run(self, stage: str, inputs: Any, build: Callable[[Path], None], collective: bool = False) -> CacheEntry:
        """Return the cached output for `inputs`, building it with `build(partial_dir)` if missing.

        `inputs` is everything the output depends on (configs and upstream keys); it is hashed into
        the key and saved as `inputs.json` beside the output, so a cache folder explains itself.

        In a multi-process run (crisp_pl.distributed), rank 0 builds and finishes every stage; the other
        ranks wait for it, except in a `collective` stage (a DDP fit), whose `build` every rank runs in the
        same partial folder (only rank 0 writes there) before rank 0 finishes it.
        """
        key = stable_hash(inputs)
        final = self.path(stage, key)
        if is_finished(final):
            return CacheEntry(stage, key, final)
        if is_worker():
            if collective:
                partial = final.with_name(key + ".partial")
                while not partial.is_dir() and not final.is_dir():  # rank 0 makes it before it builds
                    time.sleep(0.05)
                build(partial)
            _wait_for(final, f"{stage}/{key}")
            return CacheEntry(stage, key, final)
        with exclusive(final.with_name(key + ".lock"), f"{stage}/{key}"):
            if final.is_dir():  # finished (or damaged) while this process waited for the lock
                if intact(final):
                    return CacheEntry(stage, key, final)
                _set_aside(final)
            partial = final.with_name(key + ".partial")
            partial.mkdir(parents=True, exist_ok=True)
            (partial / "inputs.json").write_text(json.dumps(inputs, indent=1, sort_keys=True, default=str))
            started = time.perf_counter()
            build(partial)
            (partial / "stage.json").write_text(json.dumps({"seconds": time.perf_counter() - started}))
            _write_manifest(partial)
            os.replace(partial, final)
        return CacheEntry(stage, key, final)

    def finished(self, stage: str) -> list[tuple[CacheEntry, dict]]:
        """Every finished output of `stage` with the inputs it was built from (its `inputs.json`)."""
        folder = self.root / stage
        if not folder.is_dir():
            return []
        return [(CacheEntry(stage, p.name, p), json.loads((p / "inputs.json").read_text()))
                for p in sorted(folder.iterdir()) if p.is_dir() and "." not in p.name and (p / "inputs.json").is_file() and intact(p)]

    def status(self) -> dict[str, dict[str, int]]:
        """Per stage: how many finished and partial outputs exist."""
        out: dict[str, dict[str, int]] = {}
        if not self.root.is_dir():
            return out
        for stage_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            entries = [p for p in stage_dir.iterdir() if p.is_dir() and ".damaged-" not in p.name]
            partial = sum(p.name.endswith(".partial") for p in entries)
            out[stage_dir.name] = {"done": len(entries) - partial, "partial": partial}
        return out



MANIFEST = "manifest.json"


def _wait_for(final: Path, what: str) -> None:
    """A worker rank: wait until rank 0 has finished the stage (it fails or is killed: the launcher ends the run)."""
    started = last = time.monotonic()
    while not final.is_dir():
        time.sleep(0.1)
        if time.monotonic() - last > 600:  # a long stage (embedding a large pool): say so every 10 minutes
            last = time.monotonic()
            print(f"cache: waiting {(last - started) / 60:.0f} min for rank 0 to finish {what}", flush=True)


@contextmanager
def exclusive(lock_path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on `lock_path`; the kernel releases it if the holder is killed."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"cache: another process is building {what}; waiting for it", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def held(lock_path: Path) -> bool:
    """Whether a live process holds `exclusive(lock_path)` (a killed holder's lock is released by the kernel)."""
    try:
        with open(lock_path) as handle:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
    except BlockingIOError:
        return True
    except FileNotFoundError:
        return False


def _files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}


def _write_manifest(folder: Path) -> None:
    (folder / MANIFEST).write_text(json.dumps(_files(folder), indent=0))


def is_finished(folder: Path) -> bool:
    """Whether a stage's final folder exists and is intact: the one test of a stage being done."""
    return folder.is_dir() and intact(folder)


def intact(folder: Path) -> bool:
    """Whether a finished folder still holds every file its manifest lists, at its size (True without a manifest)."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return True  # a folder finished before manifests existed
    try:
        listed = json.loads(manifest.read_text())
    except ValueError:
        return False
    return all((folder / name).is_file() and (folder / name).stat().st_size == size for name, size in listed.items())


def _set_aside(folder: Path) -> None:
    """Move a damaged finished folder out of the way (kept, not deleted) so the stage is rebuilt."""
    n = 0
    while (aside := folder.with_name(f"{folder.name}.damaged-{n}")).exists():
        n += 1
    print(f"cache: {folder} is damaged (a file is missing or has changed size since it was finished); "
          f"moved to {aside.name} and rebuilt", flush=True)
    os.replace(folder, aside)
