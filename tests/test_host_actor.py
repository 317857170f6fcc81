"""Acting in numpy on a CPU: the actor's forward pass, on live views of its weights."""

import copy

import pytest
import torch
from torch import nn

from vadam_rl.host_actor import HostActor, acting_forward
from vadam_rl.networks import Actor
from vadam_rl.population.stacking import stack_modules

OBS = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))


def reference(actor: Actor, obs: torch.Tensor) -> torch.Tensor:
    """The actor's forward in float64 torch, on a copy (independent of the numpy path)."""
    with torch.no_grad():
        return copy.deepcopy(actor).double()(obs.double())


def test_numpy_forward_equals_the_actor_in_float64():
    actor = Actor(5, 3, [16, 12], final_layer_init=0.5).double()
    forward = acting_forward(actor)
    assert isinstance(forward, HostActor)
    torch.testing.assert_close(forward(OBS), reference(actor, OBS), rtol=1e-12, atol=1e-12)


def test_numpy_forward_equals_the_actor_in_float32_up_to_rounding():
    actor = Actor(5, 3, [400, 300], final_layer_init=0.5)
    forward = acting_forward(actor)
    action = forward(OBS[:2])
    assert action.dtype == torch.float32 and action.shape == (2, 3)
    torch.testing.assert_close(action.double(), reference(actor, OBS[:2]), rtol=0, atol=1e-5)


def test_batches_too_big_for_one_blas_thread_go_through_the_module():
    actor = Actor(5, 3, [400, 300])
    forward = acting_forward(actor)
    calls = []
    actor.register_forward_hook(lambda *args: calls.append(1))  # after: numpy won't call it
    forward(OBS[:2])  # 2 x 400 x 300 multiply-adds: below 2^18
    assert calls == []
    with torch.no_grad():
        assert torch.equal(forward(OBS[:3]), actor(OBS[:3]))
    assert len(calls) == 2


def test_in_place_writes_show_through_and_replaced_storage_is_noticed():
    torch.manual_seed(0)
    actor = Actor(5, 3, [16]).double()
    forward = acting_forward(actor)
    before = forward(OBS).clone()

    optimizer = torch.optim.Adam(actor.parameters(), lr=0.1)
    actor(OBS.double()).sum().backward()
    optimizer.step()  # writes the weights in place
    torch.testing.assert_close(forward(OBS), reference(actor, OBS), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(forward(OBS), before)

    actor.load_state_dict(Actor(5, 3, [16]).double().state_dict())  # copies in place
    torch.testing.assert_close(forward(OBS), reference(actor, OBS), rtol=1e-12, atol=1e-12)

    layer = actor.mu[0]
    layer.weight.data = layer.weight.data * 2.0  # a new storage
    torch.testing.assert_close(forward(OBS), reference(actor, OBS), rtol=1e-12, atol=1e-12)


class Doubled(Actor):
    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return 2.0 * super().forward(obs)


@pytest.mark.parametrize(
    "make",
    [
        lambda: Doubled(5, 3, [8]),  # a subclass may compute something else
        lambda: nn.Sequential(nn.Linear(5, 3), nn.Tanh()),  # not an Actor
        lambda: stack_modules([Actor(5, 3, [8]), Actor(5, 3, [8])]),  # a population's
    ],
)
def test_what_it_cannot_compute_is_left_to_the_module(make):
    module = make()
    assert acting_forward(module) is module


def test_a_hooked_actor_is_left_to_the_module():
    actor = Actor(5, 3, [8])
    actor.mu[0].register_forward_hook(lambda *args: None)
    assert acting_forward(actor) is actor
