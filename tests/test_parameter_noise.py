"""The parameter-space noise family: adaptive parameter noise (Plappert et al. 2018), NoisyNet
(Fortunato et al. 2018) and a posterior whose scale adapts, each checked against an
independent reference (numpy in float64, a hand computation with a fixed generator, the
rule replayed in a few lines)."""

from __future__ import annotations

import math
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import TINY, popen_cli, run_cli, tensors, wait_for
from sb3_helpers import assert_sb3_matches, files_under
from torch import nn

from vadam_rl.agent.adaptive_noise import AdaptiveScale, action_distance, perturbable
from vadam_rl.agent.exploration import ParameterNoise, PosteriorSampling, make_exploration
from vadam_rl.agent.networks import Actor, NoisyLinear, mean_actor, mean_state, noise_drawn
from vadam_rl.agent.optimizers import build_optimizer
from vadam_rl.agent.registry import make_learner
from vadam_rl.agent.stacking import stack_modules
from vadam_rl.commands.train import announce_compile
from vadam_rl.config import (
    ConfigError,
    ExplorationConfig,
    OptimizerConfig,
    TrainConfig,
    apply_overrides,
    load_preset,
)
from vadam_rl.fast.select import why_autograd
from vadam_rl.rng import AgentGenerators
from vadam_rl.training.outputs import at_floor_fraction
from vadam_rl.training.run import train

OBS = torch.randn(64, 5, generator=torch.Generator().manual_seed(0))


def replay_rule(distances, initial, delta, alpha):
    """Plappert's adaptation as baselines' AdaptiveParamNoiseSpec.adapt writes it."""
    sigma, out = initial, []
    for d in distances:
        sigma = sigma / alpha if d > delta else sigma * alpha
        out.append(sigma)
    return out


# ------------------------------------------------------------------------ the adaptation rule


def test_the_scale_follows_the_rule_replayed_in_numpy_for_each_agent():
    rng = np.random.default_rng(0)
    distances = rng.uniform(0.0, 0.4, size=(200, 3))
    distances[5] = 0.2  # exactly delta: baselines grows the noise
    scale = AdaptiveScale(0.1, 0.2, 1.01, adapt_every=1, agents=3, device=torch.device("cpu"))
    got = []
    for row in distances:
        scale.adapt(torch.tensor(row, dtype=torch.float32))
        got.append(scale.scale.double().numpy())
    for k in range(3):
        want = replay_rule(distances[:, k].astype(np.float32), 0.1, np.float32(0.2), 1.01)
        np.testing.assert_allclose(np.array(got)[:, k], want, rtol=1e-5)  # float32 products


def test_adaptation_is_due_every_k_updates():
    scale = AdaptiveScale(0.1, 0.2, 1.01, adapt_every=50, agents=None, device=torch.device("cpu"))
    due = [i + 1 for i in range(200) if scale.due()]
    assert due == [50, 100, 150, 200]


def test_the_action_distance_is_the_root_mean_square_over_batch_and_actions():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 64, 6)), rng.normal(size=(3, 64, 6))
    got = action_distance(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    want = [np.sqrt(np.mean((a[k] - b[k]) ** 2)) for k in range(3)]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    single = action_distance(torch.from_numpy(a[0]), torch.from_numpy(b[0]))
    assert single.shape == () and float(single) == pytest.approx(want[0], rel=1e-12)


# ------------------------------------------------------------------------ parameter noise


def noise_config(**changes) -> ExplorationConfig:
    values = {
        "kind": "parameter-noise",
        "sigma": 0.3,
        "target_action_distance": 0.2,
        "adapt_every": 1,
        "resample_every": 0,
    }
    return ExplorationConfig(**{**values, **changes})


def layer_norm_actor(seed: int = 0) -> Actor:
    torch.manual_seed(seed)
    return Actor(5, 2, [16, 8], layer_norm=True).double()


def test_the_behaviour_actor_is_the_mean_plus_sigma_noise_on_all_but_layer_norm():
    actor = layer_norm_actor()
    strategy = make_exploration(noise_config(), actor, None, torch.Generator().manual_seed(3))
    strategy.act(OBS.double())
    # The same draws by hand: one N(0, 1) tensor per perturbed parameter, in parameter order.
    generator = torch.Generator().manual_seed(3)
    names = [name for name, _ in actor.named_parameters()]
    assert perturbable(actor) == ["mu.1." not in n and "mu.4." not in n for n in names]
    behaviour = dict(strategy.behaviour_actor.named_parameters())
    for (name, mu), noisy in zip(actor.named_parameters(), perturbable(actor), strict=True):
        if noisy:
            eps = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
            sigma = float(np.float32(0.3))  # the scale is kept in float32
            torch.testing.assert_close(behaviour[name], mu + sigma * eps, rtol=0, atol=1e-15)
        else:
            assert torch.equal(behaviour[name], mu)


def test_parameter_noise_redraws_when_an_episode_ends_or_every_k_steps():
    actor = layer_norm_actor()
    strategy = make_exploration(noise_config(), actor, None, torch.Generator().manual_seed(3))
    first = strategy.act(OBS.double()).behaviour
    assert torch.equal(strategy.act(OBS.double()).behaviour, first)
    strategy.on_episode_end(torch.tensor([False, True]))  # any of the envs
    assert not torch.equal(strategy.act(OBS.double()).behaviour, first)
    every = make_exploration(
        noise_config(resample_every=2), actor, None, torch.Generator().manual_seed(3)
    )
    steps = [every.act(OBS.double()).behaviour for _ in range(4)]
    assert torch.equal(steps[0], steps[1]) and not torch.equal(steps[1], steps[2])


def test_adaptation_measures_a_separate_draw_and_moves_sigma_by_the_rule():
    actor = layer_norm_actor()
    strategy = make_exploration(noise_config(), actor, None, torch.Generator().manual_seed(3))
    assert isinstance(strategy, ParameterNoise)
    strategy.act(OBS.double())
    behaviour_before = tensors(strategy.behaviour_actor.state_dict())
    sigma = 0.3
    for _ in range(30):
        strategy.after_update(OBS.double())
        with torch.no_grad():
            a = actor(OBS.double()).numpy()
            b = strategy.adaptive_actor(OBS.double()).numpy()
        d = float(np.sqrt(np.mean((a - b) ** 2)))
        assert float(strategy.noise.distance) == pytest.approx(d, rel=1e-12)
        sigma = replay_rule([d], sigma, 0.2, 1.01)[0]
        assert float(strategy.noise.scale) == pytest.approx(sigma, rel=1e-6)
    # The acting draw is left alone until its own redraw.
    after = tensors(strategy.behaviour_actor.state_dict())
    assert all(torch.equal(behaviour_before[k], after[k]) for k in after)


def test_a_population_redraws_only_the_agents_whose_episodes_ended_as_their_single_runs_do():
    actors = [layer_norm_actor(seed) for seed in (0, 1)]
    singles = [
        make_exploration(noise_config(), a, None, torch.Generator().manual_seed(10 + k))
        for k, a in enumerate(actors)
    ]
    stacked = stack_modules(actors)
    streams = AgentGenerators([torch.Generator().manual_seed(10 + k) for k in range(2)])
    population = make_exploration(noise_config(), stacked, None, streams)
    obs = OBS.double()
    population.act(torch.stack([obs, obs]))
    for single in singles:
        single.act(obs)
    # Only agent 1 ends an episode: it draws again, agent 0 keeps its draw (and its stream).
    population.on_episode_end(torch.tensor([[False], [True]]))
    singles[1].on_episode_end(torch.tensor([True]))
    population.act(torch.stack([obs, obs]))
    for single in singles:
        single.act(obs)
    for k, single in enumerate(singles):
        for name, p in single.behaviour_actor.named_parameters():
            got = dict(population.behaviour_actor.named_parameters())[name][k]
            assert torch.equal(got, p), (k, name)
        assert torch.equal(streams[k].get_state(), single.generator.get_state())


def test_layer_norm_actor_matches_functional_layer_norm_in_float64():
    actor = layer_norm_actor()
    with torch.no_grad():
        for layer in actor.modules():
            if isinstance(layer, nn.LayerNorm):
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.uniform_(-0.5, 0.5)
    x = OBS.double()
    m = actor.mu
    h = F.relu(F.layer_norm(m[0](x), (16,), m[1].weight, m[1].bias, eps=1e-5))
    h = F.relu(F.layer_norm(m[3](h), (8,), m[4].weight, m[4].bias, eps=1e-5))
    torch.testing.assert_close(actor(x), torch.tanh(m[6](h)), rtol=0, atol=1e-14)
    stacked = stack_modules([actor, layer_norm_actor(1)])
    torch.testing.assert_close(stacked(torch.stack([x, x]))[0], actor(x), rtol=0, atol=1e-14)


# ------------------------------------------------------------------------ NoisyNet


def test_noisy_linear_starts_as_the_paper_says():
    torch.manual_seed(0)
    layer = NoisyLinear(400, 300)
    bound = 1 / math.sqrt(400)
    assert layer.weight.abs().max() <= bound and layer.bias.abs().max() <= bound
    assert float(layer.weight.detach().std()) == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert torch.all(layer.weight_sigma == 0.5 / math.sqrt(400))
    assert torch.all(layer.bias_sigma == 0.5 / math.sqrt(400))


def test_noisy_linear_computes_factorised_noise_as_by_hand():
    torch.manual_seed(0)
    layer = NoisyLinear(4, 3).double()
    with torch.no_grad():
        layer.weight_sigma.uniform_(0.1, 0.9)
        layer.bias_sigma.uniform_(0.1, 0.9)
    x = torch.randn(7, 4, dtype=torch.float64)
    with noise_drawn(layer, torch.Generator().manual_seed(5)):
        got = layer(x).detach().numpy()
    generator = torch.Generator().manual_seed(5)
    # the inputs' noise first, in the layer's dtype
    eps_in = torch.randn(4, generator=generator, dtype=torch.float64).numpy()
    eps_out = torch.randn(3, generator=generator, dtype=torch.float64).numpy()

    def f(v):
        return np.sign(v) * np.sqrt(np.abs(v))

    mu_w, mu_b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    sig_w, sig_b = layer.weight_sigma.detach().numpy(), layer.bias_sigma.detach().numpy()
    w = mu_w + sig_w * np.outer(f(eps_out), f(eps_in))
    b = mu_b + sig_b * f(eps_out)
    np.testing.assert_allclose(got, x.numpy() @ w.T + b, rtol=0, atol=1e-12)
    # Outside the draw the layer is its mean.
    np.testing.assert_allclose(layer(x).detach().numpy(), x.numpy() @ mu_w.T + mu_b, atol=1e-12)


def test_a_noisy_actor_in_mean_mode_is_the_plain_actor_with_its_means():
    torch.manual_seed(0)
    noisy = Actor(5, 2, [16, 8], noisy=True)
    plain = mean_actor(5, 2, TrainConfig().actor.__class__(hidden_sizes=[16, 8]))
    plain.load_state_dict(mean_state(noisy))  # strict: exactly the plain actor's entries
    assert torch.equal(noisy(OBS), plain(OBS))
    stacked = stack_modules([noisy, Actor(5, 2, [16, 8], noisy=True)])
    torch.testing.assert_close(stacked(torch.stack([OBS, OBS]))[0], plain(OBS), rtol=0, atol=1e-6)


def pendulum_config(preset: str, *extra: str) -> TrainConfig:
    return apply_overrides(
        load_preset(preset, "Pendulum-v1"),
        [
            "actor.hidden_sizes=[32,32]",
            "critic.hidden_sizes=[32,32]",
            "learning_starts=200",
            "total_steps=1200",
            "eval_every=600",
            "eval_episodes=2",
            *extra,
        ],
    )


def test_noisy_net_learns_its_sigmas_and_keeps_the_target_on_the_mean():
    config = pendulum_config("ddpg-noisynet")
    generators = AgentGenerators([torch.Generator().manual_seed(0)])
    agent = make_learner(config, 3, 1, torch.device("cpu"), [0], generators)
    sigmas = [layer.weight_sigma.detach().clone() for layer in agent.actor.modules()
              if isinstance(layer, NoisyLinear)]  # fmt: skip
    from vadam_rl.agent.batch import Batch

    g = torch.Generator().manual_seed(1)
    obs, actions, rewards = (torch.randn(1, 32, d, generator=g) for d in (3, 1, 1))
    batch = Batch(obs, actions, rewards, torch.randn(1, 32, 3, generator=g), torch.zeros(1, 32, 1))
    agent.update(batch)
    after = [
        layer.weight_sigma for layer in agent.actor.modules() if isinstance(layer, NoisyLinear)
    ]
    assert all(not torch.equal(a, b) for a, b in zip(after, sigmas, strict=True))
    assert all(
        layer.noise is None for layer in agent.actor.modules() if isinstance(layer, NoisyLinear)
    )
    policy = agent.policy_state()
    assert not any(key.endswith("_sigma") for key in policy["actor"])
    exploration = make_exploration(config.exploration, agent.actor, None, g)
    obs = torch.randn(1, 4, 3, generator=g)
    with torch.no_grad():
        step = exploration.act(obs)
        assert torch.equal(step.mean, agent.actor(obs))
    assert not torch.equal(step.behaviour, step.mean)


# ------------------------------------------------------------------------ the adaptive posterior


def vadam(actor: nn.Module, floor: float) -> torch.optim.Optimizer:
    config = OptimizerConfig(
        name="vadam", lr=1e-3, prior_precision=1.0, train_set_size=100.0, precision_floor=floor
    )
    return build_optimizer(actor.parameters(), config, generator=torch.Generator().manual_seed(1))


def test_the_scaled_posterior_acts_with_mu_plus_kappa_sigma_eps():
    torch.manual_seed(0)
    actor = Actor(5, 2, [16]).double()
    optimizer = vadam(actor, floor=0.0)
    # tanh actions lie within 2 of each other: a target of 3 is never reached
    config = ExplorationConfig(kind="posterior", target_action_distance=3.0, adapt_every=1)
    strategy = make_exploration(config, actor, optimizer, torch.Generator().manual_seed(2))
    assert isinstance(strategy, PosteriorSampling) and strategy.kappa is not None
    for _ in range(5):  # kappa grows by 1.01 each time
        strategy.after_update(OBS.double())
    kappa = float(strategy.kappa.scale)
    assert kappa == pytest.approx(1.01**5, rel=1e-6)
    # The next draw, by hand: the optimizer's eps (same generator state), scaled by kappa.
    state = optimizer.generator.get_state()
    reference = [p.detach().clone() for p in actor.parameters()]
    unscaled = [torch.empty_like(p) for p in reference]
    optimizer.sample_into(unscaled)
    optimizer.generator.set_state(state)
    strategy.act(OBS.double())
    for got, mu, theta in zip(
        strategy.behaviour_actor.parameters(), reference, unscaled, strict=True
    ):
        torch.testing.assert_close(got, mu + kappa * (theta - mu), rtol=0, atol=1e-12)


def test_at_floor_fraction_counts_the_weights_whose_precision_is_the_floor():
    torch.manual_seed(0)
    actor = Actor(5, 2, [16])
    optimizer = vadam(actor, floor=1e4)

    def closure():
        optimizer.zero_grad()
        loss = actor(OBS).square().mean() * 1e3
        loss.backward()
        return loss

    for _ in range(3):
        optimizer.step(closure)
    sigmas = optimizer.posterior_std()
    # By hand, in float64: precision N*s + lambda + c against c.
    s = [optimizer.state[p]["exp_avg_sq"].double() for p in actor.parameters()]
    data = [100.0 * v + 1.0 for v in s]
    want = sum(int((d <= 0.01 * 1e4).sum()) for d in data) / sum(v.numel() for v in s)
    assert 0 < want < 1  # the test means something: some weights at the floor, some not
    assert at_floor_fraction(optimizer, sigmas) == pytest.approx(
        want, abs=2 / sum(v.numel() for v in s)
    )
    assert at_floor_fraction(vadam(actor, floor=0.0), sigmas) == 0.0


# ------------------------------------------------------------------------ runs


def kill_args(preset: str, log_dir: Path, name: str) -> list[str]:
    return [
        "train", "--agent", preset, "--env", "Pendulum-v1", "--total-steps", "2000",
        "--log-dir", str(log_dir), "--run-name", name, "--no-progress", *TINY,
        "--set", "learning_starts=200", "--set", "eval_every=500", "--set", "checkpoint_every=400",
    ]  # fmt: skip


@pytest.mark.parametrize("preset", ["ddpg-param-noise", "ddpg-noisynet", "ddpg-vadam-adaptive"])
@pytest.mark.expensive
def test_a_run_killed_outright_resumes_bit_for_bit(preset: str, tmp_path: Path):
    run_cli(*kill_args(preset, tmp_path, "whole"), check=True)
    log = tmp_path / "killed.log"
    process = popen_cli(*kill_args(preset, tmp_path, "killed"), log=log)
    wait_for(log, "step     1,000")  # past two checkpoints, a thousand steps before the end
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed" / "summary.json").exists(), "killed too late to test"
    run_cli("train", "--resume", str(tmp_path / "killed"), "--no-progress", check=True)

    left = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    right = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert torch.equal(left["generator"], right["generator"])
    for part in ("agent", "exploration"):  # sigma or kappa, counters, the behaviour draw
        a, b = tensors(left[part]), tensors(right[part])
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    rows = [
        (tmp_path / n / "evaluations.csv").read_text().splitlines() for n in ("whole", "killed")
    ]
    assert [r.split(",")[:3] for r in rows[0]] == [r.split(",")[:3] for r in rows[1]]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["exploration.target_action_distance=null"], "needs exploration.target_action_distance"),
        (["exploration.adapt_factor=1.0"], "adapt_factor must be finite and > 1"),
        (["exploration.adapt_every=0"], "adapt_every must be >= 1"),
        (["exploration.kind=gaussian"], "has none"),
    ],
)
def test_parameter_noise_settings_are_checked(change, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(load_preset("ddpg-param-noise"), change)


def test_noisy_net_refuses_a_variational_actor_optimizer():
    with pytest.raises(ConfigError, match="use adam"):
        apply_overrides(load_preset("ddpg-noisynet"), ["actor.optimizer.name=vadam"])


# ------------------------------------------------------------------------ exports


def test_a_noisy_net_runs_model_zip_acts_as_its_mean_actor_in_sb3(tmp_path: Path):
    run_dir = tmp_path / "run"
    train(pendulum_config("ddpg-noisynet"), run_dir, progress_bar=False)
    # The reference: the trained noisy actor itself, sigmas and all, with no draw in force.
    state = torch.load(run_dir / "checkpoint.pt", weights_only=True)["agent"]["actor"]
    actor = Actor(3, 1, [32, 32], noisy=True)
    actor.load_state_dict(state)
    sigmas = [v for k, v in state.items() if k.endswith("_sigma")]
    assert sigmas and all(s.abs().max() > 0 for s in sigmas)
    assert_sb3_matches(run_dir / "model.zip", actor, "Pendulum-v1", episodes=1, n_obs=200)


@pytest.mark.expensive
def test_a_layer_norm_run_exports_to_onnx_and_refuses_an_sb3_zip_with_one_line(
    tmp_path: Path, capsys
):
    onnxruntime = pytest.importorskip("onnxruntime", reason="needs the onnx extra")
    pytest.importorskip("onnxscript", reason="needs the onnx extra")
    run_dir = tmp_path / "run"
    train(pendulum_config("ddpg-param-noise"), run_dir, progress_bar=False)
    assert "model.zip not written: SB3's DDPG MlpPolicy has no LayerNorm" in capsys.readouterr().err
    assert not (run_dir / "model.zip").exists()

    before = files_under(tmp_path)
    refused = run_cli("export", str(run_dir))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "LayerNorm" in refused.stderr and "--onnx" in refused.stderr
    assert files_under(tmp_path) == before

    out = tmp_path / "policy.onnx"
    assert run_cli("export", str(run_dir), "--onnx", str(out)).returncode == 0
    actor = Actor(3, 1, [32, 32], layer_norm=True).double()
    actor.load_state_dict(torch.load(run_dir / "policies" / "last.pt", weights_only=True)["actor"])
    obs = np.random.default_rng(0).normal(size=(500, 3)) * 3
    with torch.no_grad():
        want = 2.0 * actor(torch.from_numpy(obs)).numpy()  # Pendulum's torque bound is 2
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (got,) = session.run(["action"], {"obs": obs.astype(np.float32)})
    # float32 through the actor (~1e-6 of the [-1, 1] output after LayerNorm's rescaling)
    # times the bound 2.
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "preset",
    [
        "ddpg-param-noise",
        "ddpg-noisynet",
        "ddpg-vadam-adaptive",
        "ddpg-vadam",
        "td3-param-noise",
        "td3-noisynet",
        "td3",
    ],
)
def test_the_update_path_announced_before_building_is_the_one_the_agent_gets(preset: str, capsys):
    config = pendulum_config(preset)
    generators = AgentGenerators([torch.Generator()])
    agent = make_learner(config, 3, 1, torch.device("cpu"), [0], generators)
    falls_back = preset.endswith(("param-noise", "noisynet"))
    assert (why_autograd(config) is not None) == (not agent.hand_written) == falls_back
    announce_compile(config)
    assert ("update:        autograd" in capsys.readouterr().out) == falls_back
