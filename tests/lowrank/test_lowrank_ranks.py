import pytest

from pela_export.errors import OptionError
from pela_export.lowrank import align_rank, check_ratio, pela_rank
from pela_export.lowrank.ranks import LayerShape, saves_params


@pytest.mark.parametrize("i,o,k,expected", [
    (64, 192, 2, 24),          # 64*192 // (2*256)
    (384, 1536, 2, 153),       # 589824 // 3840 = 153.6
    (384, 1536, 3, 102),       # 589824 // 5760 = 102.4
    (768, 768, 2, 192),
    (10, 10, 4, 1),
])
def test_pela_rank_formula(i, o, k, expected):
    assert pela_rank(i, o, k) == expected


def test_pela_rank_halves_params_at_k2():
    r = pela_rank(384, 1536, 2)
    assert r * (384 + 1536) <= 384 * 1536 / 2


@pytest.mark.parametrize("k", [1, 0.5, 0, -2])
def test_ratio_must_exceed_one(k):
    with pytest.raises(OptionError, match="--ratio"):
        check_ratio(k)


@pytest.mark.parametrize("r,m,expected", [(153, 8, 152), (102, 8, 96), (3, 8, 8), (24, None, 24), (24, 1, 24), (130, 64, 128)])
def test_align_rank_rounds_down_with_floor(r, m, expected):
    assert align_rank(r, m) == expected


def test_saves_params_rule():
    s = LayerShape("x", 8, 8, bias=True)
    assert saves_params(s, 3)       # 3*16=48 < 64
    assert not saves_params(s, 4)   # 64 == 64
    assert not saves_params(s, 0)
