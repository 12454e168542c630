import pytest
import torch

from freeact_export.token_types import TokenTypes


def test_single_type_by_default():
    types = TokenTypes.parse("single")
    assert types.num_types == 1 and types.names == ("other",)
    assert torch.equal(types.assign(torch.tensor([[5, 6, 7]])), torch.zeros(1, 3, dtype=torch.int32))


def test_first_matching_rule_wins_and_text_round_trips():
    text = "sink=pos:2;mask=ids:9,11;vision=input:vision_mask"
    types = TokenTypes.parse(text)
    assert types.to_text() == text and TokenTypes.parse(types.to_text()) == types
    assert types.names == ("other", "sink", "mask", "vision")
    ids = torch.tensor([[9, 3, 9, 11, 4, 5]])
    vision = torch.tensor([[0, 0, 0, 1, 1, 0]])
    got = types.assign(ids, {"vision_mask": vision})
    # position 0: sink beats mask; 3: mask beats vision; 4: vision; 5: other
    assert got.tolist() == [[1, 1, 2, 2, 3, 0]]


@pytest.mark.parametrize("bad", ["sink=pos", "x=foo:1", "=ids:1", "a=ids:1;a=pos:2", "other=pos:1", "m=ids:x",
                                 "sink=pos:0", "sink=pos:-2"])
def test_bad_rules_are_refused(bad):
    with pytest.raises(ValueError):
        TokenTypes.parse(bad)


def test_missing_explicit_input_is_named():
    with pytest.raises(ValueError, match="needs the model input 'vision_mask'"):
        TokenTypes.parse("v=input:vision_mask").assign(torch.tensor([[1, 2]]))
