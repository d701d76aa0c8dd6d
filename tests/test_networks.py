"""Gated MLP layers (the VampPrior paper's networks) and activation choices that fail clearly."""

from __future__ import annotations

import pytest
import torch

from vaelik.models.iaf import IAFGuide
from vaelik.models.networks import ConvEncoder, GatedLinear, MLPDecoder, MLPEncoder, mlp


def test_gated_linear_is_a_linear_layer_times_a_sigmoid_gate():
    torch.manual_seed(0)
    layer = GatedLinear(5, 3)
    x = torch.randn(4, 5)
    expected = (x @ layer.linear.weight.T + layer.linear.bias) * torch.sigmoid(
        x @ layer.gate.weight.T + layer.gate.bias
    )
    torch.testing.assert_close(layer(x), expected)


def test_a_gated_mlp_gates_every_hidden_layer_and_ends_linear():
    net = mlp([6, 4, 4, 2], "gated")
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["GatedLinear", "GatedLinear", "Linear"]
    encoder = MLPEncoder((1, 2, 3), 4, hidden=(8, 8), activation="gated")
    decoder = MLPDecoder(2, (1, 2, 3), hidden=(8,), activation="gated")
    assert encoder(torch.rand(5, 1, 2, 3)).shape == (5, 4)
    assert decoder(torch.randn(5, 2)).shape == (5, 1, 2, 3)


def test_gated_is_refused_where_it_is_not_defined():
    with pytest.raises(ValueError, match="unknown activation 'gated'"):
        ConvEncoder((1, 28, 28), 4, channels=(8,), activation="gated")
    with pytest.raises(ValueError, match="unknown activation 'gated'"):
        IAFGuide(MLPEncoder((1, 2, 3), 8, hidden=()), 2, context_features=4, activation="gated")
    with pytest.raises(ValueError, match="unknown activation 'sigmoidal'.*gated"):
        mlp([3, 2], "sigmoidal")
