"""TD3 (vadam_rl.agent.td3) against the paper's equations, written out again in float64 with
two separate critics (no stacking, no hand-written gradients), and as a user trains it.

Fujimoto et al. 2018, Algorithm 1: a~ = clip(pi'(s') + clip(N(0, 0.2^2), -0.5, 0.5), -1, 1);
y = r + gamma (1 - d) min(Q'1(s', a~), Q'2(s', a~)); both critics regress on y; every
d-th update the actor ascends Q1(s, pi(s)) and the targets move by Polyak averaging.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from conftest import TINY, popen_cli, run_cli, tensors, wait_for
from learners import ACT, OBS, double_learner, fast, make_batch, make_config
from sb3_helpers import assert_sb3_matches

from vadam_rl.agent.networks import Actor, Critic
from vadam_rl.agent.td3 import TD3
from vadam_rl.config import ConfigError, apply_overrides, load_preset
from vadam_rl.sb3.export import export_sb3
from vadam_rl.sb3.load import import_sb3
from vadam_rl.training.records import read_evaluations

HIDDEN = (16, 12)


def td3_config(optimizer: str = "adam"):
    config = make_config(optimizer, action_layer=0, hidden=HIDDEN, algorithm="td3")
    config.td3.target_noise_clip = 0.3  # below 3 sigma: the clip is exercised
    return config


class Reference:
    """Agent 0's networks as separate float64 modules: an actor, two critics and targets."""

    def __init__(self, learner: TD3, k: int = 0) -> None:
        def actor(module) -> Actor:
            net = Actor(OBS, ACT, list(HIDDEN)).double()
            net.load_state_dict({n: v[k] for n, v in module.state_dict().items()})
            return net

        def critic(module, j: int) -> Critic:
            net = Critic(OBS, ACT, list(HIDDEN), action_layer=0).double()
            net.load_state_dict({n: v[k, j] for n, v in module.state_dict().items()})
            return net

        self.actor, self.actor_target = actor(learner.actor), actor(learner.actor_target)
        self.critics = [critic(learner.critic, j) for j in range(2)]
        self.targets = [critic(learner.critic_target, j) for j in range(2)]


def paper_target(ref: Reference, batch, noise: torch.Tensor, gamma: float, clip: float):
    s, r, s2, d = batch.obs[0], batch.rewards[0], batch.next_obs[0], batch.terminated[0]
    with torch.no_grad():
        eps = (0.2 * noise).clamp(-clip, clip)
        a2 = (ref.actor_target(s2) + eps).clamp(-1.0, 1.0)
        q_next = torch.min(ref.targets[0](s2, a2), ref.targets[1](s2, a2))
    del s
    return r + gamma * (1.0 - d) * q_next


@pytest.mark.parametrize("autograd", [False, True])
def test_the_target_and_both_losses_match_the_papers_equations_in_float64(autograd: bool):
    learner = double_learner(td3_config(), autograd=autograd)
    assert learner.hand_written != autograd
    ref = Reference(learner)
    batch = make_batch()
    generator = learner.generator
    before = generator.get_state()
    learner.begin_update(batch)  # draws this update's smoothing noise from agent 0's stream
    replay = torch.Generator().manual_seed(0)
    replay.set_state(before)
    noise = torch.randn(batch.actions[0].shape, generator=replay, dtype=torch.float64)
    y = paper_target(ref, batch, noise, learner.gamma, 0.3)
    got_y = learner.target_q(batch)
    torch.testing.assert_close(got_y[0], y, rtol=1e-12, atol=1e-12)

    # Critic loss: the sum of the two critics' mean squared errors, and its gradient.
    s, a = batch.obs[0], batch.actions[0]
    loss = sum(((q(s, a) - y) ** 2).mean() for q in ref.critics)
    loss.backward()
    got_loss = learner.critic_closure(batch, got_y)
    torch.testing.assert_close(got_loss[0], loss.detach(), rtol=1e-12, atol=1e-12)
    for name, p in learner.critic.named_parameters():
        for j, q in enumerate(ref.critics):
            want = dict(q.named_parameters())[name].grad
            torch.testing.assert_close(p.grad[0, j], want, rtol=1e-10, atol=1e-12)

    # Actor loss: -mean Q1(s, pi(s)) (the first critic only), and its gradient.
    actor_loss = -ref.critics[0](s, ref.actor(s)).mean()
    actor_loss.backward()
    got_actor_loss = learner.actor_closure(batch)
    torch.testing.assert_close(got_actor_loss[0], actor_loss.detach(), rtol=1e-12, atol=1e-12)
    for (name, p), q in zip(learner.actor.named_parameters(), ref.actor.parameters(), strict=True):
        torch.testing.assert_close(p.grad[0], q.grad, rtol=1e-10, atol=1e-12, msg=name)


def test_the_actor_and_targets_change_every_second_update_the_critics_every_update():
    learner = double_learner(td3_config())
    update = fast(learner)

    def snapshot(module) -> list[torch.Tensor]:
        return [p.detach().clone() for p in module.parameters()]

    def changed(before, module) -> bool:
        return any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))

    losses = []
    for step in range(1, 7):
        names = ("actor", "critic", "actor_target", "critic_target")
        nets = {n: snapshot(getattr(learner, n)) for n in names}
        metrics = update(make_batch(seed=step))
        actor_step = step % 2 == 0  # the 2nd, 4th, ...: as sfujim/TD3 and SB3 count
        assert changed(nets["critic"], learner.critic)
        for name in ("actor", "actor_target", "critic_target"):
            assert changed(nets[name], getattr(learner, name)) == actor_step, (step, name)
        assert set(metrics) == {"critic_loss", "actor_loss", "q_target_mean"}
        losses.append(float(metrics["actor_loss"]))
    # Between actor steps the logged actor loss is the last one carried over.
    assert losses[0] == 0.0 and losses[2] == losses[1] and losses[4] == losses[3]
    assert losses[1] != losses[3]


def test_td3_settings_are_checked():
    with pytest.raises(ConfigError, match=r"td3\.policy_delay must be >= 1"):
        apply_overrides(load_preset("td3"), ["td3.policy_delay=0"])
    with pytest.raises(ConfigError, match="apply to algorithm=td3 only"):
        apply_overrides(load_preset("ddpg-adam"), ["td3.target_policy_noise=0.3"])
    with pytest.raises(ConfigError, match="target_noise_clip must be finite and >= 0"):
        apply_overrides(load_preset("td3"), ["td3.target_noise_clip=-1"])


def test_every_td3_preset_differs_from_td3_only_in_exploration_and_actor_optimizer():
    from vadam_rl.config import flat_settings, list_presets, to_dict

    base = flat_settings(to_dict(load_preset("td3")))
    allowed = ("exploration.", "actor.optimizer.", "actor.layer_norm", "agent", "cuda_graph")
    presets = [p for p in list_presets() if p.startswith("td3-")]
    family = {"td3-plain", "td3-vadam", "td3-vadam-adaptive", "td3-param-noise", "td3-noisynet"}
    assert family <= set(presets)
    for preset in presets:
        settings = flat_settings(to_dict(load_preset(preset)))
        differing = [k for k in base if settings[k] != base[k] and not k.startswith(allowed)]
        assert not differing, (preset, differing)
    assert load_preset("td3", "HalfCheetah-v5").learning_starts == 10_000
    assert load_preset("td3", "Hopper-v5").learning_starts == 1_000


def kill_args(log_dir: Path, name: str) -> list[str]:
    # Learning starts at step 201, so each checkpoint (at an episode's end, every 200 steps)
    # holds an odd number of updates: the next update is an actor step.
    return [
        "train", "--agent", "td3-vadam", "--env", "Pendulum-v1", "--total-steps", "1200",
        "--log-dir", str(log_dir), "--run-name", name, "--no-progress", *TINY,
        "--set", "learning_starts=201", "--set", "eval_every=200", "--set", "checkpoint_every=400",
    ]  # fmt: skip


@pytest.mark.expensive
def test_a_run_killed_between_two_actor_steps_resumes_bit_for_bit(tmp_path: Path):
    run_cli(*kill_args(tmp_path, "whole"), check=True)
    log = tmp_path / "killed.log"
    process = popen_cli(*kill_args(tmp_path, "killed"), log=log)
    wait_for(log, "step     1,000")  # past checkpoints at 400 and 800
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed" / "summary.json").exists(), "killed too late to test"
    saved = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert saved["agent"]["critic_updates"] % 2 == 1  # mid-way between two actor steps
    run_cli("train", "--resume", str(tmp_path / "killed"), "--no-progress", check=True)

    left = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    right = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert torch.equal(left["generator"], right["generator"])
    assert left["agent"]["critic_updates"] == right["agent"]["critic_updates"] == 1200 - 201
    for part in ("agent", "exploration"):
        a, b = tensors(left[part]), tensors(right[part])
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    returns = [
        [row["mean_return"] for row in read_evaluations(tmp_path / name)]
        for name in ("whole", "killed")
    ]
    assert returns[0] == returns[1][: len(returns[0])]


@pytest.mark.expensive
def test_sb3_td3_load_of_our_zip_acts_like_our_mean_actor_and_imports_back(tmp_path: Path):
    run_cli(
        "train", "--agent", "td3", "--env", "Pendulum-v1", "--total-steps", "600",
        "--log-dir", str(tmp_path), "--run-name", "run", "--no-progress", *TINY,
        "--set", "learning_starts=300", "--set", "eval_every=600",
        check=True,
    )  # fmt: skip
    run_dir = tmp_path / "run"
    policy = torch.load(run_dir / "policies" / "step_600.pt", weights_only=True)
    actor = Actor(3, 1, [32, 32])
    actor.load_state_dict(policy["actor"])
    assert_sb3_matches(run_dir / "model.zip", actor, "Pendulum-v1", algo="TD3")
    # Both critics and their targets went into the zip, and come back as they were.
    imported = import_sb3(export_sb3(run_dir, tmp_path / "again.zip"))
    assert imported.algorithm == "TD3"
    twins = imported.policy_file(algorithm="td3")
    for key in ("critic", "critic_target", "actor", "actor_target"):
        assert twins[key].keys() == policy[key].keys()
        assert all(torch.equal(twins[key][n], policy[key][n]) for n in policy[key]), key
    with pytest.raises(Exception, match="TD3 trains two"):
        import_sb3(_ddpg_zip(tmp_path)).policy_file(algorithm="td3")


def _ddpg_zip(tmp_path: Path) -> Path:
    from stable_baselines3 import DDPG

    model = DDPG("MlpPolicy", "Pendulum-v1", policy_kwargs={"net_arch": [8]}, device="cpu")
    model.save(tmp_path / "ddpg.zip")
    return tmp_path / "ddpg.zip"
