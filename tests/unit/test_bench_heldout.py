"""Which instances `ray-pipeline bench heldout` builds for a family/size: the config's held-out entry when it
lists one, else the same construction at that size, with a note (bench/learned.py: heldout_params)."""
import pytest

from ray_pipeline.bench.learned import heldout_params
from ray_pipeline.config import load_config
from ray_pipeline.data.steps import HELDOUT_INDEX_OFFSET
from ray_pipeline.problems import generate

from ..conftest import CONFIGS


def test_a_listed_size_uses_its_entry_and_an_unlisted_one_is_noted():
    cfg = load_config(CONFIGS / "quick.yaml")  # holds out rb/large (n=35), trains on rb small and medium
    assert heldout_params(cfg, "rb", "large") == ({}, None)
    params, note = heldout_params(cfg, "rb", "xxlarge")
    assert params == {}
    assert note.startswith("rb/xxlarge is not in data.generate.heldout") and "trained on: medium, small" in note
    inst = generate("rb", "xxlarge", HELDOUT_INDEX_OFFSET, cfg.run.seed, params)
    assert (inst.n, inst.meta["d"], inst.name) == (50, round(50 ** 0.7), "rb-xxlarge-1000000")
    assert heldout_params(load_config(CONFIGS / "default.yaml"), "rb", "xxlarge") == ({}, None)


def test_an_unlisted_size_takes_the_family_knobs_never_the_size_knobs():
    cfg = load_config(CONFIGS / "quick.yaml", ["data.generate.heldout=[{family: rb, sizes: [large], count: 2, "
                                               "params: {forced: true, n: 36}}]"])
    params, note = heldout_params(cfg, "rb", "xxlarge")
    assert params == {"forced": True} and "knobs {'forced': True}" in note
    assert generate("rb", "xxlarge", HELDOUT_INDEX_OFFSET, 0, params).n == 50  # n stays the size's own
    two = load_config(CONFIGS / "quick.yaml", ["data.generate.heldout=[{family: rb, sizes: [large], count: 2}, "
                                               "{family: rb, sizes: [xlarge], count: 2, params: {r: 2.5}}]"])
    with pytest.raises(ValueError, match="different knobs .* add a rb/xxlarge entry"):
        heldout_params(two, "rb", "xxlarge")
    with pytest.raises(ValueError, match="unknown size 'xxlarge' for ksat"):
        heldout_params(cfg, "ksat", "xxlarge")
