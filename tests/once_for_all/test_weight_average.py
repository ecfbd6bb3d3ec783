from __future__ import annotations

import pytest
import torch
from torch import nn

from once_for_all.weight_average import WeightAverage, WeightAverageError


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


def test_average_weighs_every_update_by_the_decay_from_the_first_on() -> None:
    model = _model()
    average = WeightAverage(model, decay=0.9)
    weight = model[3].weight
    expected = weight.detach().clone()
    for _ in range(30):
        with torch.no_grad():
            weight.add_(torch.randn_like(weight))
        average.update()
        expected = 0.9 * expected + 0.1 * weight.detach()
    torch.testing.assert_close(average.average["3.weight"], expected)
    assert average.updates == 30


def test_applied_swaps_the_average_in_and_back_and_copy_keeps_it() -> None:
    model = _model()
    average = WeightAverage(model, decay=0.5)
    own = model[0].weight.detach().clone()
    with torch.no_grad():
        model[0].weight.mul_(3.0)
    average.update()  # 0.5 * own + 0.5 * 3 own
    trained = model[0].weight.detach().clone()
    buffers = model[1].running_mean.clone()
    with average.applied():
        torch.testing.assert_close(model[0].weight.detach(), 2.0 * own)
    assert torch.equal(model[0].weight.detach(), trained)
    average.copy_to_model()
    torch.testing.assert_close(model[0].weight.detach(), 2.0 * own)
    assert torch.equal(model[1].running_mean, buffers)  # statistics are not averaged


def test_state_round_trip_and_a_state_for_another_network_is_refused() -> None:
    model = _model()
    average = WeightAverage(model, decay=0.99)
    with torch.no_grad():
        model[3].bias.add_(1.0)
    average.update()
    restored = WeightAverage(_model(), decay=0.99)
    restored.load_state_dict(average.state_dict())
    assert restored.updates == 1
    for name, tensor in average.average.items():
        assert torch.equal(restored.average[name], tensor)
    other = WeightAverage(nn.Linear(3, 3), decay=0.99)
    with pytest.raises(WeightAverageError, match="another network"):
        other.load_state_dict(average.state_dict())


@pytest.mark.parametrize("decay", [0.0, 1.0, -0.5])
def test_decay_outside_the_open_unit_interval_is_refused(decay: float) -> None:
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\)"):
        WeightAverage(_model(), decay=decay)
