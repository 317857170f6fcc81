import numpy as np
import pytest
import torch

from vadam_rl.agent.networks import ActionScaler, Actor, Critic, polyak_update


def test_actor_is_sb3_shaped_and_squashes():
    actor = Actor(17, 6, [400, 300])
    names = [name for name, _ in actor.named_parameters()]
    assert names == [
        "mu.0.weight",
        "mu.0.bias",
        "mu.2.weight",
        "mu.2.bias",
        "mu.4.weight",
        "mu.4.bias",
    ]
    out = actor(torch.randn(5, 17) * 100)
    assert out.shape == (5, 6) and out.abs().max() <= 1.0


def test_input_concat_critic_matches_sb3_layout():
    critic = Critic(17, 6, [400, 300], action_layer=0)
    assert critic.qf0[0].in_features == 23
    assert [n for n, _ in critic.named_parameters()][::2] == [
        "qf0.0.weight",
        "qf0.2.weight",
        "qf0.4.weight",
    ]
    assert critic(torch.randn(4, 17), torch.randn(4, 6)).shape == (4, 1)


def test_second_layer_action_critic_sees_the_state_alone_first():
    critic = Critic(17, 6, [400, 300], action_layer=1)
    assert critic.state_net[0].in_features == 17
    assert critic.joint_net[0].in_features == 400 + 6
    obs, act = torch.randn(4, 17), torch.randn(4, 6)
    expected = critic.joint_net(torch.cat([torch.relu(critic.state_net[0](obs)), act], -1))
    torch.testing.assert_close(critic(obs, act), expected)


def test_invalid_action_layer_is_rejected():
    with pytest.raises(ValueError, match="action_layer"):
        Critic(3, 1, [8, 8], action_layer=2)


def test_final_layer_init_range():
    actor = Actor(3, 2, [16], final_layer_init=3e-3)
    assert actor.mu[2].weight.abs().max() <= 3e-3


def test_polyak_update_matches_formula():
    target, source = Actor(3, 2, [8]), Actor(3, 2, [8])
    before = [p.clone() for p in target.parameters()]
    polyak_update(target, source, tau=0.1)
    for t, b, s in zip(target.parameters(), before, source.parameters(), strict=True):
        torch.testing.assert_close(t, 0.9 * b + 0.1 * s)


def test_action_scaler_maps_unit_box_to_env_box_and_back():
    scaler = ActionScaler(np.array([-2.0, 0.0]), np.array([2.0, 10.0]))
    np.testing.assert_allclose(
        scaler.to_env(np.array([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]])), [[-2, 0], [2, 10], [0, 5]]
    )
    np.testing.assert_allclose(
        scaler.to_squashed(scaler.to_env(np.array([[0.3, -0.7]]))), [[0.3, -0.7]]
    )
    np.testing.assert_allclose(scaler.to_env(np.array([[5.0, -5.0]])), [[2.0, 0.0]])  # clipped


def test_action_scaler_rejects_unbounded_boxes():
    with pytest.raises(ValueError, match="bounded"):
        ActionScaler(np.array([-np.inf]), np.array([1.0]))
