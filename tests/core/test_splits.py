import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmshard.errors import ConfigError
from mmshard.samplers.splits import assign_split, parse_split_spec


def test_parse_split_spec_and_errors():
    assert parse_split_spec("train=0.9, val=0.1") == (("train", 0.9), ("val", 0.1))
    for bad in ("", "train", "train=x", "train=0.5,val=0.4", "a=0.5,a=0.5", "tr ain=1"):
        with pytest.raises(ConfigError):
            parse_split_spec(bad)


@given(st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=50), st.integers(0, 5))
@settings(max_examples=50, deadline=None)
def test_assignment_depends_only_on_group_and_seed(groups, seed):
    spec = parse_split_spec("train=0.8,val=0.1,test=0.1")
    first = [assign_split(g, spec, seed) for g in groups]
    again = [assign_split(g, spec, seed) for g in reversed(groups)][::-1]
    assert first == again
    assert set(first) <= {"train", "val", "test"}


def test_split_sizes_follow_weights():
    spec = parse_split_spec("train=0.9,val=0.05,test=0.05")
    counts = {"train": 0, "val": 0, "test": 0}
    for i in range(20000):
        counts[assign_split(f"g{i}", spec)] += 1
    assert abs(counts["train"] / 20000 - 0.9) < 0.01
    assert abs(counts["val"] / 20000 - 0.05) < 0.01
