import pytest

from crisp_pl import workspace
from crisp_pl.config import ConfigError, RunConfig, build_run_config, load_yaml, parse_set, stable_hash, to_dict
from crisp_pl.study import list_studies, load_study, points


def test_defaults_are_the_papers():
    cfg = RunConfig()
    assert cfg.corpus.window_length == 1024
    assert cfg.cluster.levels == [64, 1024, 16384, 262144]
    assert cfg.train.lr == 1e-4 and cfg.train.grad_clip == 5.0
    assert cfg.embed.max_seq_length == 256


def test_set_overrides_parse_yaml_values():
    assert parse_set(["train.lr=0.5", "cluster.levels=[8, 64]", "task.name=code"]) == {
        "train": {"lr": 0.5}, "cluster": {"levels": [8, 64]}, "task": {"name": "code"}}
    assert build_run_config(parse_set(["train.lr=3e-4"])).train.lr == 3e-4  # YAML 1.1 gives the string '3e-4'
    cfg = build_run_config({"train": {"lr": 1}}, parse_set(["train.lr=0.5"]))
    assert cfg.train.lr == 0.5 and isinstance(cfg.train.lr, float)


@pytest.mark.parametrize("layer, message", [
    ({"trian": {"lr": 1}}, "unknown key 'trian'"),
    ({"train": {"lrr": 1}}, "unknown key 'train.lrr'"),
    ({"corpus": {"sources": [{"name": "x", "kynd": "jsonl"}]}}, "unknown key 'corpus.sources[0].kynd'"),
    ({"train": {"max_steps": "many"}}, "train.max_steps: expected int"),
    ({"cluster": {"levels": [64, 100]}}, "100 is not a multiple of 64"),
    ({"corpus": {"sources": [{"name": "x", "kind": "jsonl"}]}}, "needs a `path`"),
    ({"task": {"train_fraction": 0.9, "test_fraction": 0.5}}, "sum to <= 1"),
])
def test_bad_config_names_the_key(layer, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        build_run_config(layer)


def test_bad_set_and_bad_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        parse_set(["train.lr"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml: invalid YAML"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match="no such config file"):
        load_yaml(tmp_path / "missing.yaml")


def test_hash_is_stable_and_sensitive():
    a, b = to_dict(RunConfig()), to_dict(build_run_config({"train": {"lr": 2e-4}}))
    assert stable_hash(a) == stable_hash(to_dict(RunConfig()))
    assert stable_hash(a) != stable_hash(b)


def test_every_shipped_config_and_study_loads():
    for path in sorted(workspace.builtin("configs").rglob("*.yaml")):
        build_run_config(load_yaml(path), where=str(path))
    studies = list_studies()
    assert {s.name for s in studies} >= {"quickstart"}
    for study in studies:
        for scale in ("tiny", "cpu", "small", "paper"):
            assert points(study, scale)


def test_quickstart_points_differ_only_by_method():
    pts = points(load_study("quickstart"), "tiny", ["train.max_steps=7"])
    assert [p.config.selection.method for p in pts] == ["uniform", "crisp", "specialist"]
    dicts = [to_dict(p.config) for p in pts]
    for d in dicts:
        d["selection"].pop("method")
        assert d["train"]["max_steps"] == 7
    assert dicts[0] == dicts[1] == dicts[2]


def test_unknown_study_and_scale(tmp_path):
    with pytest.raises(ConfigError, match="known studies: .*quickstart"):
        load_study("nope")
    with pytest.raises(ConfigError, match="unknown scale 'huge'"):
        points(load_study("quickstart"), "huge")
    bad = tmp_path / "s.yaml"
    bad.write_text("name: s\ngrdi: {}\n")
    with pytest.raises(ConfigError, match="s.yaml: unknown key 'grdi'"):
        load_study(str(bad))
    assert workspace.builtin("studies").is_dir()


def test_a_scale_gives_grid_keys_its_own_values(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: s\ngrid: {train.max_steps: [1, 2]}\nscales: {small: {grid: {train.max_steps: [100]}}}\n")
    assert [p.config.train.max_steps for p in points(load_study(str(path)), "tiny")] == [1, 2]
    assert [p.config.train.max_steps for p in points(load_study(str(path)), "small")] == [100]
    path.write_text("name: s\ngrid: {train.max_steps: [1, 2]}\nscales: {small: {grid: {train.lr: [0.1]}}}\n")
    with pytest.raises(ConfigError, match="train.lr"):
        points(load_study(str(path)), "small")


def test_non_defaults_hold_only_what_a_config_changes():
    from crisp_pl.config import non_defaults

    cfg = build_run_config({"train": {"lr": 0.5, "ladder": None}, "task": "arc_easy"})
    changed = non_defaults(cfg)
    assert changed["train"] == {"lr": 0.5} and "ladder" not in changed["train"] and "model" not in changed
    assert changed["task"]["name"] == "arc_easy" and changed["task"]["split"] == "halves"
    assert non_defaults(build_run_config({})) == {}


def test_a_plus_key_extends_an_included_list_instead_of_replacing_it():
    from crisp_pl.config import ConfigError, build_run_config, parse_set

    included = {"corpus": {"sources": [{"name": "wiki"}, {"name": "medical"}]}}
    cfg = build_run_config(included, {"corpus": {"sources+": [{"name": "my_manuals", "kind": "text", "path": "/data"}]}},
                           parse_set(["corpus.sources+=[{name: bbc_news}]"]))
    assert [s.name for s in cfg.corpus.sources] == ["wiki", "medical", "my_manuals", "bbc_news"]
    assert [s.name for s in build_run_config(included, {"corpus": {"sources": [{"name": "x"}]}}).corpus.sources] == ["x"]
    with pytest.raises(ConfigError, match="holdout\\+"):
        build_run_config({"corpus": {"holdout+": "medical"}})


def test_a_source_field_added_later_leaves_a_study_s_identity_unchanged_while_unset():
    from crisp_pl.config import build_run_config, non_defaults

    cfg = build_run_config({"corpus": {"sources": [{"name": "wiki"}]}})
    assert "id_field" not in non_defaults(cfg)["corpus"]["sources"][0]  # studies hashed before it existed are found again
    cfg = build_run_config({"corpus": {"sources": [{"name": "wiki", "kind": "jsonl", "path": "x", "id_field": "id"}]}})
    assert non_defaults(cfg)["corpus"]["sources"][0]["id_field"] == "id"


def test_a_task_preset_can_be_amended_by_dotted_keys_in_either_order():
    for order in (["task=medical", "task.domain_in_pool=true"], ["task.domain_in_pool=true", "task=medical"]):
        cfg = build_run_config(parse_set(order))
        assert (cfg.task.name, cfg.task.domain_in_pool, cfg.task.train_fraction) == ("medical", True, 0.1)
    with pytest.raises(ConfigError, match="train.lr is already set to 0.1, not a mapping"):
        parse_set(["train.lr=0.1", "train.lr.x=2"])
