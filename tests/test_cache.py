import json
import subprocess
import sys

import pytest

from crisp_pl.cache import StageCache


def test_builds_once_then_reuses(tmp_path):
    cache, calls = StageCache(tmp_path), []

    def build(out):
        calls.append(out)
        (out / "x.txt").write_text("hello")

    first = cache.run("stage", {"a": 1}, build)
    again = cache.run("stage", {"a": 1}, build)
    other = cache.run("stage", {"a": 2}, build)
    assert len(calls) == 2 and first == again and first.key != other.key
    assert (first.path / "x.txt").read_text() == "hello"
    assert json.loads((first.path / "inputs.json").read_text()) == {"a": 1}
    assert cache.lookup("stage", {"a": 1}) == first and cache.lookup("stage", {"a": 3}) is None
    assert cache.status() == {"stage": {"done": 2, "partial": 0}}


def test_failure_keeps_partial_work_for_the_next_attempt(tmp_path):
    cache = StageCache(tmp_path)

    def crash(out):
        (out / "shard-0").write_text("done")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.run("embed", {"k": 1}, crash)
    assert cache.lookup("embed", {"k": 1}) is None
    assert cache.status() == {"embed": {"done": 0, "partial": 1}}

    seen = []

    def resume(out):
        seen.append((out / "shard-0").read_text())
        (out / "shard-1").write_text("done")

    stage = cache.run("embed", {"k": 1}, resume)
    assert seen == ["done"] and sorted(p.name for p in stage.path.iterdir()) == ["inputs.json", "manifest.json", "shard-0", "shard-1", "stage.json"]
    assert stage.seconds >= 0.0 and (stage.path / "stage.json").is_file()  # the build's wall time, for cost accounting


def test_a_damaged_finished_stage_is_set_aside_and_rebuilt_never_read(tmp_path):
    cache, calls = StageCache(tmp_path), []

    def build(out):
        calls.append(out)
        (out / "shards").mkdir()
        (out / "shards" / "0.bin").write_bytes(b"x" * 100)

    entry = cache.run("embeddings", {"k": 1}, build)
    assert json.loads((entry.path / "manifest.json").read_text())["shards/0.bin"] == 100
    with open(entry.path / "shards" / "0.bin", "r+b") as f:  # cut short, as a full disk or a bad copy leaves it
        f.truncate(60)
    assert cache.lookup("embeddings", {"k": 1}) is None and cache.finished("embeddings") == []
    again = cache.run("embeddings", {"k": 1}, build)
    assert len(calls) == 2 and (again.path / "shards" / "0.bin").stat().st_size == 100
    assert (tmp_path / "embeddings" / f"{entry.key}.damaged-0" / "shards" / "0.bin").stat().st_size == 60  # kept aside
    (again.path / "shards" / "0.bin").unlink()  # a missing file is damage too
    cache.run("embeddings", {"k": 1}, build)
    assert len(calls) == 3 and (tmp_path / "embeddings" / f"{entry.key}.damaged-1").is_dir()
    assert cache.status() == {"embeddings": {"done": 1, "partial": 0}}
    (cache.path("embeddings", entry.key) / "manifest.json").unlink()  # finished before manifests: taken as it is
    assert cache.lookup("embeddings", {"k": 1}) is not None


BUILD_SLOWLY = """
import os, sys, time
from pathlib import Path
from crisp_pl.cache import StageCache

def build(out):
    with open(Path(sys.argv[1]) / "builds.log", "a") as log:
        log.write("built\\n")
    deadline = time.time() + 30
    while len(list(Path(sys.argv[1]).glob("arrived-*"))) < 2 and time.time() < deadline:
        time.sleep(0.05)  # hold the stage until the other process has arrived at it
    time.sleep(0.3)
    (out / "x.txt").write_text("shared")

(Path(sys.argv[1]) / f"arrived-{os.getpid()}").touch()
entry = StageCache(Path(sys.argv[1]) / "cache").run("windows", {"k": 1}, build)
print((entry.path / "x.txt").read_text())
"""


def test_two_processes_sharing_a_stage_build_it_once_and_both_read_it(tmp_path):
    procs = [subprocess.Popen([sys.executable, "-c", BUILD_SLOWLY, str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=60)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert (tmp_path / "builds.log").read_text() == "built\n"  # the second waited on the lock, then read
    assert all(out.strip().endswith("shared") for out in outputs)
    assert any("waiting for it" in out for out in outputs)
    assert StageCache(tmp_path / "cache").status() == {"windows": {"done": 1, "partial": 0}}


def test_a_lock_reads_as_held_only_while_a_holder_lives(tmp_path):
    from crisp_pl.cache import exclusive, held

    lock = tmp_path / "locks" / "study.lock"
    assert not held(lock)  # never taken: no file
    with exclusive(lock, "the study"):
        assert held(lock)
    assert not held(lock)
    holder = subprocess.Popen([sys.executable, "-c", f"from crisp_pl.cache import exclusive\nimport time\n"
                               f"with exclusive(__import__('pathlib').Path({str(lock)!r}), 'x'):\n    print('in', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "in" and held(lock)
    holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the lock
    holder.wait()
    assert not held(lock)
