"""Acting in numpy on a CPU: the actor's forward pass, on live views of its weights."""

import copy

import pytest
import torch
from torch import nn

from vadam_rl.agent.networks import Actor
from vadam_rl.agent.stacking import stack_modules
from vadam_rl.fast.host_actor import HostActor, acting_forward

OBS = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
OBS64 = OBS.double()
HOOKS = ["linear", "actor", "sequential pre-hook", "relu"]


def reference(actor: Actor, obs: torch.Tensor) -> torch.Tensor:
    """The actor's forward in float64 torch, on a copy (independent of the numpy path)."""
    with torch.no_grad():
        return copy.deepcopy(actor).double()(obs.double())


def host_act(actor: Actor, forward, obs: torch.Tensor) -> torch.Tensor:
    """``forward(obs)`` as acting calls it (no autograd), checking that numpy computed it: a
    hook added after ``acting_forward`` fires only if the module runs."""
    calls = []
    handle = actor.register_forward_hook(lambda *args: calls.append(1))
    try:
        with torch.no_grad():
            action = forward(obs)
    finally:
        handle.remove()
    assert calls == [], "computed by the module, not numpy"
    return action


def test_numpy_forward_equals_the_actor_in_float64():
    actor = Actor(5, 3, [16, 12], final_layer_init=0.5).double()
    forward = acting_forward(actor)
    assert isinstance(forward, HostActor)
    action = host_act(actor, forward, OBS64)
    torch.testing.assert_close(action, reference(actor, OBS64), rtol=1e-12, atol=1e-12)


def test_numpy_forward_equals_the_actor_in_float32_up_to_rounding():
    actor = Actor(5, 3, [400, 300], final_layer_init=0.5)
    action = host_act(actor, acting_forward(actor), OBS[:2])
    assert action.dtype == torch.float32 and action.shape == (2, 3)
    torch.testing.assert_close(action.double(), reference(actor, OBS[:2]), rtol=0, atol=1e-5)


def test_batches_too_big_for_one_blas_thread_go_through_the_module():
    actor = Actor(5, 3, [400, 300])
    forward = acting_forward(actor)
    host_act(actor, forward, OBS[:2])  # 2 x 400 x 300 multiply-adds: below 2^18
    with torch.no_grad(), pytest.raises(AssertionError, match="by the module"):
        host_act(actor, forward, OBS[:3])
    with torch.no_grad():
        assert torch.equal(forward(OBS[:3]), actor(OBS[:3]))


def test_in_place_writes_show_through_and_replaced_storage_is_noticed():
    torch.manual_seed(0)
    actor = Actor(5, 3, [16]).double()
    forward = acting_forward(actor)

    def check() -> torch.Tensor:
        action = host_act(actor, forward, OBS64)
        torch.testing.assert_close(action, reference(actor, OBS64), rtol=1e-12, atol=1e-12)
        return action

    before = check().clone()
    optimizer = torch.optim.Adam(actor.parameters(), lr=0.1)
    actor(OBS64).sum().backward()
    optimizer.step()  # writes the weights in place
    assert not torch.allclose(check(), before)
    actor.load_state_dict(Actor(5, 3, [16]).double().state_dict())  # copies in place
    check()
    layer = actor.mu[0]
    layer.weight.data = layer.weight.data * 2.0  # a new storage
    check()
    actor.load_state_dict(Actor(5, 3, [16]).double().state_dict(), assign=True)  # new objects
    check()


class Doubled(Actor):
    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return 2.0 * super().forward(obs)


class LeakyReLU(nn.ReLU):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.leaky_relu(x, 0.1)


def hooked(where: str) -> Actor:
    actor = Actor(5, 3, [8])
    if where == "linear":
        actor.mu[0].register_forward_hook(lambda *args: None)
    elif where == "actor":
        actor.register_forward_hook(lambda module, args, out: 2 * out)
    elif where == "sequential pre-hook":
        actor.mu.register_forward_pre_hook(lambda module, args: (2 * args[0],))
    elif where == "relu":
        actor.mu[1].register_forward_hook(lambda *args: None)
    return actor


def relu_subclass() -> Actor:
    actor = Actor(5, 3, [8])
    actor.mu[1] = LeakyReLU()
    return actor


@pytest.mark.parametrize(
    "make",
    [
        lambda: Doubled(5, 3, [8]),  # a subclass may compute something else
        relu_subclass,
        lambda: nn.Sequential(nn.Linear(5, 3), nn.Tanh()),  # not an Actor
        lambda: Actor(5, 3, [8]).to(torch.bfloat16),  # numpy has no bfloat16
        *(lambda where=where: hooked(where) for where in HOOKS),
    ],
)
def test_what_it_cannot_compute_is_left_to_the_module(make):
    module = make()
    assert acting_forward(module) is module


@pytest.mark.parametrize("agents", [1, 3])
def test_a_stacked_actor_acts_in_numpy_as_each_of_its_agents_in_float64(agents: int):
    torch.manual_seed(0)
    actors = [Actor(5, 3, [8, 6]).double() for _ in range(agents)]
    stacked = stack_modules(actors)  # (every run is stacked: a single run is one agent)
    forward = acting_forward(stacked)
    assert isinstance(forward, HostActor)
    obs = torch.randn(agents, 4, 5, dtype=torch.float64)
    got = host_act(stacked, forward, obs)
    expected = torch.stack([reference(actor, obs[k]) for k, actor in enumerate(actors)])
    # float64 sums of 8 products of O(1) terms: rounding far below 1e-12
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_global_forward_hooks_leave_acting_to_the_module():
    actor = Actor(5, 3, [8])
    handle = nn.modules.module.register_module_forward_hook(lambda *args: None)
    try:
        assert acting_forward(actor) is actor
    finally:
        handle.remove()
    assert isinstance(acting_forward(actor), HostActor)


def test_autograd_other_dtypes_and_an_actor_moved_off_the_cpu_go_through_the_module():
    actor = Actor(5, 3, [8])
    forward = acting_forward(actor)
    assert forward(OBS).requires_grad  # autograd on: the module's graph
    with torch.no_grad():
        with pytest.raises(RuntimeError):  # as the module: float64 obs, float32 weights
            forward(OBS.double())
        actor.to("meta")
        assert forward(OBS.to("meta")).device.type == "meta"
