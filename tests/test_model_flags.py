"""The model flags: several KEY=VALUE words after one --override or --kwargs."""

from __future__ import annotations

from sinolc_dist.model_flags import spread_pairs


def test_pair_flags_take_several_words():
    args = ["--region", "x", "--override", "a=1", "b=[2, 3]", "--kwargs", "k=v", "--arch", "l2hnet",
            "--override", "c=4"]
    assert spread_pairs(args) == ["--region", "x", "--override", "a=1", "--override", "b=[2, 3]",
                                  "--kwargs", "k=v", "--arch", "l2hnet", "--override", "c=4"]
    assert spread_pairs(["--override=a=1", "b=2"]) == ["--override=a=1", "--override", "b=2"]
