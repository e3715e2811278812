import json

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
    assert seen == ["done"] and sorted(p.name for p in stage.path.iterdir()) == ["inputs.json", "shard-0", "shard-1", "stage.json"]
    assert stage.seconds >= 0.0 and (stage.path / "stage.json").is_file()  # the build's wall time, for cost accounting
