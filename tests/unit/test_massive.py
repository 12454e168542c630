import torch

from freeact_export.calibrate.massive import MassiveTokens


def _window(ids, spikes):
    peaks = torch.ones(len(ids))
    for pos in spikes:
        peaks[pos] = 500.0
    return torch.tensor(ids), [peaks, torch.ones(len(ids))]


def test_leading_position_sinks_suggest_a_position_rule():
    found = MassiveTokens()
    for w in range(10):
        found.add_window(*_window([w + 5, 7, 8, 9, 10, 11], spikes=[0]))
    assert found.positions[0] == 10 and found.peak_ratio == 500.0
    assert found.suggested_rules() == ["sink=pos:1"]


def test_an_id_massive_wherever_it_occurs_suggests_an_id_rule():
    found = MassiveTokens()
    for _ in range(6):
        ids = [20, 21, 22, 13, 23, 24]
        found.add_window(*_window(ids, spikes=[3]))  # token 13 ('\n', say) mid-window, every time
    assert found.suggested_rules() == ["sink=ids:13"]
    summary = found.summary()
    assert summary["token_ids"] == {"13 '13'": "6/6"} and summary["positions"] == {3: 6}


def test_no_outliers_no_rules():
    found = MassiveTokens()
    found.add_window(*_window([1, 2, 3], spikes=[]))
    assert found.suggested_rules() == [] and found.summary()["positions"] == {}
