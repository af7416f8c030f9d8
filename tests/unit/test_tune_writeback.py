"""`ray-pipeline tune --write-back`: the swept keys change in the config file, nothing else does, and a write
that would not load leaves the file as it was."""
import pytest

from ray_pipeline.config import ConfigError, load_config
from ray_pipeline.tune.writeback import write_back

from ..conftest import CONFIGS


def test_write_back_sets_the_swept_keys_and_keeps_the_rest_of_the_file(tmp_path):
    src = (CONFIGS / "default.yaml").read_text()
    config = tmp_path / "default.yaml"
    config.write_text(src)
    before = load_config(config)
    changes = write_back(config, "student", {"hidden": 48, "layers": 3, "distill.alpha": 0.712345,
                                             "distill.temperature": 4.0}, "best of 6 trials")
    after = load_config(config)
    assert changes["train.student.hidden"] == (before.train.student.hidden, 48)
    assert (after.train.student.hidden, after.train.student.layers) == (48, 3)
    assert (after.train.student.distill.alpha, after.train.student.distill.temperature) == (0.7123, 4.0)
    # everything not swept loads exactly as before, and every comment line of the file is still there
    assert after.model_copy(update={"train": before.train}) == before
    assert after.train.student.optim == before.train.student.optim and after.train.teacher == before.train.teacher
    text = config.read_text()
    def comments(t):  # every comment but the write-back's own note
        return [ln for ln in t.splitlines() if ln.strip().startswith("#") and "swept:" not in ln]
    assert comments(src) == comments(text) and len(comments(src)) > 10
    # a second write-back replaces the first one's note instead of stacking notes
    write_back(config, "student", {"hidden": 32}, "best of 8 trials")
    text = config.read_text()
    assert text.count("# train.student swept:") == 1 and "best of 8 trials" in text
    assert load_config(config).train.student.hidden == 32


@pytest.mark.parametrize("params, says", [({"hidden": -1}, "hidden"), ({"optim.lr.x": 1.0}, "optim.lr.x")])
def test_a_write_back_that_would_not_load_leaves_the_file_untouched(tmp_path, params, says):
    config = tmp_path / "default.yaml"
    config.write_text((CONFIGS / "default.yaml").read_text())
    before = config.read_bytes()
    with pytest.raises(ConfigError) as e:
        write_back(config, "student", params, "note")
    assert says in str(e.value)
    assert config.read_bytes() == before


def test_lines_outside_the_section_stay_byte_for_byte_and_small_floats_stay_floats(tmp_path):
    import yaml

    src = (CONFIGS / "quick.yaml").read_text()
    config = tmp_path / "quick.yaml"
    config.write_text(src)
    write_back(config, "student", {"hidden": 48, "optim.lr": 1.234567e-05}, "best of 4 trials")
    before, after = src.splitlines(), config.read_text().splitlines()
    start = next(i for i, ln in enumerate(before) if ln.startswith("  student:"))
    end = next(i for i, ln in enumerate(before) if ln.startswith("  cost:"))
    # everything before and after train.student as it was (quick.yaml's two-line `evaluate.files` included)
    assert after[:start] == before[:start] and after[-(len(before) - end):] == before[end:]
    assert after[start] == "  # train.student swept: best of 4 trials"
    raw = yaml.safe_load(config.read_text())  # a plain YAML 1.1 reader: 1e-05 would be a string there
    assert raw["train"]["student"]["optim"]["lr"] == pytest.approx(1.235e-05) and raw["train"]["student"]["hidden"] == 48


DATA = "data: {generate: {families: [{family: rb, sizes: [small], count: 2}]}}\n"


@pytest.mark.parametrize("text", ["train:\n  num_workers: 1\n  student:\nrun: {name: x}\n" + DATA,
                                  "train: {num_workers: 1, student: {hidden: 8}}\nrun: {name: x}\n" + DATA])
def test_an_empty_section_or_a_one_line_train_gets_the_values_and_the_note(tmp_path, text):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    write_back(config, "student", {"hidden": 40, "distill.alpha": 0.25}, "best of 2 trials")
    cfg = load_config(config)
    assert (cfg.train.student.hidden, cfg.train.student.distill.alpha, cfg.train.num_workers) == (40, 0.25, 1)
    assert config.read_text().count("swept: best of 2 trials") == 1 and cfg.run.name == "x"


def test_a_symlinked_config_stays_a_link_and_keeps_its_permissions(tmp_path):
    real = tmp_path / "configs" / "default.yaml"
    real.parent.mkdir()
    real.write_text((CONFIGS / "default.yaml").read_text())
    real.chmod(0o640)
    link = tmp_path / "mine.yaml"
    link.symlink_to(real)
    write_back(link, "student", {"hidden": 48}, "best of 2 trials")
    assert link.is_symlink() and load_config(real).train.student.hidden == 48
    assert real.stat().st_mode & 0o777 == 0o640
