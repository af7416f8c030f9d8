from pathlib import Path

import pytest

import yaml

from ray_pipeline.cli import main
from ray_pipeline.config import Config, ConfigError, apply_overrides, load_config, load_raw, validate
from ray_pipeline.pipeline import SPECS

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SHIPPED = sorted(CONFIGS.glob("*.yaml"))


def test_the_four_configs_ship():
    assert {p.name for p in SHIPPED} >= {"quick.yaml", "default.yaml", "large.yaml", "tune.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg.run.name == path.stem
    assert cfg.data.generate.families


def _stage_hashes(cfg):
    return {name: spec.config_hash(cfg) for name, spec in SPECS.items()}


def test_stage_hashes_follow_the_values_not_how_the_file_spells_them(tmp_path):
    """Resume skips a stage when its config hash matches: equal for the same values written differently,
    different exactly for the stages that read a changed value."""
    base = _stage_hashes(load_config(CONFIGS / "quick.yaml"))
    raw = _quick_raw()
    # the same values: sections and keys in reverse order, one flow-style line, no comments, an int where a
    # float is meant (30 vs 30.0) and a default spelt out
    respelt = {k: raw[k] for k in reversed(list(raw))}
    respelt["train"] = {k: raw["train"][k] for k in reversed(list(raw["train"]))}
    respelt["evaluate"] = dict(raw["evaluate"], time_limit_s=30)
    respelt["train"]["max_failures"] = Config.model_fields["train"].default.max_failures
    (tmp_path / "same.yaml").write_text(yaml.safe_dump(respelt, default_flow_style=True, sort_keys=False, width=10**6))
    assert "\n" not in (tmp_path / "same.yaml").read_text().strip()
    assert _stage_hashes(load_config(tmp_path / "same.yaml")) == base

    for override, changed in (("data.label.top_k=6", {"generate"}),
                              ("train.student.hidden=48", {"train", "tune"}),
                              # quick.yaml sweeps the teacher's hidden and optim.lr: each trial sets them itself,
                              # so writing the winners back (tune --write-back) leaves the sweep up to date
                              ("train.teacher.hidden=48", {"train"}), ("train.teacher.optim.lr=0.001", {"train"}),
                              ("train.teacher.optim.epochs=3", {"train"}), ("train.teacher.heads=2", {"train", "tune"}),
                              ("export.latency_calls=10", {"export"}),
                              ("evaluate.node_limit=1000", {"evaluate"}),
                              # the export stores the learned heuristic's setting in the model it evaluates
                              ("evaluate.learned.min_margin=0.1", {"export", "evaluate"}),
                              ("train.families=[rb]", {"train", "tune", "export"}),
                              ("run.seed=1", set(SPECS) - {"report"})):  # report summarises; it has no config
        now = _stage_hashes(load_config(CONFIGS / "quick.yaml", [override]))
        assert {s for s in SPECS if now[s] != base[s]} == changed, override


def _quick_raw():
    return load_raw(CONFIGS / "quick.yaml")


def test_unknown_keys_and_bad_types_are_all_reported_at_once():
    raw = _quick_raw()
    raw["bogus"] = 1
    raw["train"]["num_workerz"] = 2
    raw["data"]["label"]["top_k"] = "eight"
    raw["data"]["split"] = {"train": 0.9}
    with pytest.raises(ConfigError) as ei:
        validate(raw, "x.yaml")
    text = str(ei.value)
    assert "x.yaml" in text and "4 problems" in text
    assert "bogus: unknown key" in text
    assert "train.num_workerz: unknown key" in text
    assert "data.label.top_k:" in text
    assert "data.split:" in text and "must be 1" in text


def test_overrides_are_type_checked_and_address_lists():
    raw = apply_overrides(_quick_raw(), ["run.name=try1", "run.root=/data/runs", "train.num_workers=1",
                                         "data.generate.families.0.count=3", "evaluate.heuristics=[lex, mrv]"])
    cfg = validate(raw)
    assert (cfg.run.name, cfg.run.root, cfg.train.num_workers) == ("try1", "/data/runs", 1)
    assert cfg.data.generate.families[0].count == 3
    assert cfg.evaluate.heuristics == ["lex", "mrv"]
    with pytest.raises(ConfigError) as ei:
        load_config(CONFIGS / "quick.yaml", ["train.num_workers=two", "train.nope=1", "data.generate.families.9.count=1"])
    text = str(ei.value)
    assert "data.generate.families.9" in text  # list index checked when applying
    with pytest.raises(ConfigError) as ei:
        load_config(CONFIGS / "quick.yaml", ["train.num_workers=two", "train.nope=1"])
    assert "train.num_workers" in str(ei.value) and "train.nope: unknown key" in str(ei.value)


def test_cross_field_rules():
    raw = _quick_raw()
    raw["train"]["teacher"]["hidden"] = 30  # not a multiple of 4 heads
    raw["stages"] = ["train", "generate"]
    raw["tune"]["space"] = {"optim.lr": {"kind": "loguniform", "low": 0, "high": 1}}
    with pytest.raises(ConfigError) as ei:
        validate(raw)
    t = str(ei.value)
    assert "train.teacher" in t and "multiple of heads" in t
    assert "stages" in t and "pipeline order" in t
    assert "tune.space.optim.lr" in t and "low > 0" in t


def test_train_models_subset_is_checked_against_the_stages(tmp_path, capsys):
    with pytest.raises(ConfigError, match="teacher comes first"):
        validate({**_quick_raw(), "train": {**_quick_raw()["train"], "models": ["student", "teacher"]}})
    code = main(["run", str(CONFIGS / "quick.yaml"), "train.models=[teacher]", f"run.root={tmp_path}"])
    err = capsys.readouterr().err
    assert code == 2 and "train.models" in err and "export, evaluate, report need" in err
    assert not any(tmp_path.iterdir())  # refused before anything was written


def test_yaml_syntax_error_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("run:\n  name: x\n  seed: [1, 2\n")
    with pytest.raises(ConfigError) as ei:
        load_config(bad)
    assert "bad.yaml" in str(ei.value) and "line" in str(ei.value)


def test_cli_bad_config_exits_nonzero_naming_each_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text((CONFIGS / "quick.yaml").read_text() + "\nextra_section: 1\n")
    code = main(["run", str(bad), "train.num_workers=-1", "data.label.top_k=x"])
    err = capsys.readouterr().err
    assert code == 2
    for key in ("extra_section: unknown key", "train.num_workers", "data.label.top_k"):
        assert key in err
    assert not (tmp_path / "runs").exists()  # nothing written before the config is valid


def test_cli_missing_config_file(capsys):
    assert main(["generate", "/no/such.yaml"]) == 2
    assert "/no/such.yaml" in capsys.readouterr().err


def test_a_size_must_exist_for_its_family():
    """`xxlarge` (Model RB n=50) is defined for RB only: asking another family for it fails validation, naming
    the key, instead of failing in a Ray Data worker halfway through the generate stage."""
    from ray_pipeline.config import SIZES
    from ray_pipeline.problems import SIZE_DEFAULTS

    assert set(SIZES) == {z for sizes in SIZE_DEFAULTS.values() for z in sizes}
    assert [SIZE_DEFAULTS["rb"][z]["n"] for z in SIZES] == [20, 30, 35, 40, 50]  # SIZES runs smallest first
    cfg = load_config(CONFIGS / "quick.yaml", ["data.generate.heldout=[{family: rb, sizes: [xxlarge], count: 3}]"])
    assert cfg.data.generate.heldout[0].sizes == ["xxlarge"]
    with pytest.raises(ConfigError) as ei:
        load_config(CONFIGS / "quick.yaml", ["data.generate.heldout=[{family: ksat, sizes: [large, xxlarge], count: 3}]"])
    assert "data.generate.heldout.0: ksat has no size xxlarge (its sizes: small, medium, large, xlarge)" in str(ei.value)


def test_overrides_after_a_flag_are_overrides_and_other_stray_words_are_errors(tmp_path, capsys):
    # the same refusal as above, reached only if the overrides after --stages were read as overrides
    code = main(["run", str(CONFIGS / "quick.yaml"), "--stages", "train,export", "train.models=[teacher]",
                 f"run.root={tmp_path}"])
    assert code == 2 and "train.models" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["run", str(CONFIGS / "quick.yaml"), "--force", "not-an-override"])
    assert e.value.code == 2 and "unrecognized arguments: not-an-override" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_fresh_calibration_needs_a_training_mix():
    """evaluate.fresh_calibration builds the training mix again: a config whose generate families hold none of
    train.families has none, and says so by key."""
    base = ["data.generate.families=[{family: coloring, sizes: [small], count: 3}]"]
    with pytest.raises(ConfigError, match="evaluate.fresh_calibration: data.generate.families holds none of"):
        load_config(CONFIGS / "quick.yaml", base)  # quick.yaml: fresh_calibration 1, train.families [rb, ksat]
    assert load_config(CONFIGS / "quick.yaml", [*base, "evaluate.fresh_calibration=0"]).evaluate.fresh_calibration == 0


def test_an_optional_learned_model_must_be_trained_and_has_no_onnx():
    """evaluate.learned.model may name an optional scorer (the graph scorer) only when train.models builds it, and
    such a kind has no ONNX file to run; a kind that scores nothing is refused as before."""
    with pytest.raises(ConfigError, match=r"evaluate.learned.model: 'graph' is an optional kind: list it in "
                                          r"train.models"):
        load_config(CONFIGS / "quick.yaml", ["evaluate.learned.model=graph"])
    both = ["evaluate.learned.model=graph", "train.models=[teacher, student, cost, graph]"]
    with pytest.raises(ConfigError, match="evaluate.learned.runtime: 'onnx-int8': the graph kind has no ONNX"):
        load_config(CONFIGS / "quick.yaml", [*both, "evaluate.learned.runtime=onnx-int8"])
    assert load_config(CONFIGS / "quick.yaml", both).evaluate.learned.model == "graph"
    with pytest.raises(ConfigError, match="'cost' is not a variable scorer"):
        load_config(CONFIGS / "quick.yaml", ["evaluate.learned.model=cost"])
