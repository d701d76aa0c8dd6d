"""The folded sigmoid form of tanh MLPs: the same function as the layers, used only inside an
evaluation's scope, and never stale."""

import pytest
import torch

from vaelik.models.folding import TanhMLP, fold_tanh_layers
from vaelik.models.frozen import frozen
from vaelik.models.networks import mlp


def layer_by_layer(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.nn.Sequential.forward(net, x)


@pytest.mark.parametrize("sizes", [[6, 3], [6, 9, 3], [6, 9, 7, 3], [6, 9, 7, 8, 3]])
def test_the_folded_form_is_the_network(sizes):
    torch.manual_seed(len(sizes))
    net = mlp(sizes, "tanh").double()
    x = torch.randn(11, sizes[0], dtype=torch.float64) * 2
    with torch.no_grad(), frozen(net):
        folded = net(x)
        assert net._folded is not None, "the folded form was not used"
    assert torch.allclose(folded, layer_by_layer(net, x), rtol=1e-12, atol=1e-13)
    net32 = net.float()
    with torch.no_grad(), frozen(net32):
        difference = net32(x.float()) - layer_by_layer(net32, x.float())
    assert difference.abs().max() < 1e-5


def test_fold_tanh_layers_scales_by_the_identity():
    first, middle, last = (torch.nn.Linear(2, 2) for _ in range(3))
    folded = fold_tanh_layers([first, middle, last])
    assert torch.equal(folded[0][0], 2 * first.weight) and torch.equal(folded[0][1], 2 * first.bias)
    ones = torch.ones(2)
    assert torch.allclose(folded[1][0], 4 * middle.weight)
    assert torch.allclose(folded[1][1], 2 * (middle.bias - middle.weight @ ones))
    assert torch.allclose(folded[2][0], 2 * last.weight)
    assert torch.allclose(folded[2][1], last.bias - last.weight @ ones)


@pytest.mark.parametrize("fused", [False, True])
def test_evaluations_between_optimiser_steps_see_the_new_weights(fused):
    # fused optimisers update parameters in place without bumping their version counters
    torch.manual_seed(0)
    net = mlp([4, 8, 2], "tanh")
    x = torch.randn(5, 4)
    optimiser = torch.optim.Adam(net.parameters(), lr=0.1, fused=fused)
    for _ in range(3):
        with torch.inference_mode(), frozen(net):
            assert torch.allclose(net(x), layer_by_layer(net, x), atol=1e-6)
        net(x).square().sum().backward()
        optimiser.step()
        optimiser.zero_grad()
    assert net._folded is None and not net._folding  # the scope drops its copies


def test_outside_the_scope_and_with_autograd_the_layers_run():
    torch.manual_seed(1)
    net = mlp([4, 8, 2], "tanh")
    x = torch.randn(5, 4)
    with torch.no_grad():
        assert torch.equal(net(x), layer_by_layer(net, x))
    with frozen(net):
        net(x).sum().backward()  # gradients flow through the layers
        assert net[0].weight.grad is not None and net._folded is None
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(net(x), layer_by_layer(net, x))
    half = mlp([4, 8, 2], "tanh").bfloat16()
    with torch.no_grad(), frozen(half):
        assert torch.equal(half(x.bfloat16()), layer_by_layer(half, x.bfloat16()))
        assert half._folded is None


def test_a_network_of_another_shape_runs_its_layers():
    torch.manual_seed(2)
    net = mlp([4, 8, 8, 2], "tanh")
    x = torch.randn(5, 4)
    cut = net[:-1]  # ends in a tanh
    assert isinstance(cut, TanhMLP) and not cut.alternates()
    with torch.no_grad(), frozen(cut):
        assert torch.equal(cut(x), layer_by_layer(cut, x))
    with torch.no_grad(), frozen(TanhMLP()):
        pass  # an empty network neither folds nor fails


def test_a_tanh_mlp_keeps_the_state_dict_of_a_sequential():
    net = mlp([3, 5, 2], "tanh")
    plain = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    assert isinstance(net, TanhMLP) and net.alternates()
    assert list(net.state_dict()) == list(plain.state_dict())
    assert type(mlp([3, 5, 2], "relu")) is torch.nn.Sequential
