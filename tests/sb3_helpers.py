"""Test helpers for the SB3 bridge: fabricate run directories, check zips in a fresh SB3 process.

``assert_sb3_matches`` is the acceptance check of issue 4, reusable after real training:

    zip_path = export_sb3(run_dir)
    assert_sb3_matches(zip_path, actor, "HalfCheetah-v5")
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vadam_rl.agent.networks import ActionScaler, Actor, Critic
from vadam_rl.config import NetworkConfig, TrainConfig, save_config
from vadam_rl.envs import make_env
from vadam_rl.evaluation import evaluate
from vadam_rl.run_dir import BEST_POLICY, CONFIG, POLICIES, atomic_torch_save, policy_path

# Runs in a fresh interpreter that may import SB3 and gymnasium but not vadam_rl: an exported
# zip must load for users who never installed vadam-rl.
SB3_CHECK_SCRIPT = r"""
import json, sys

class BlockVadamRl:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "vadam_rl":
            raise ImportError("loading an exported model must not need vadam_rl")

sys.meta_path.insert(0, BlockVadamRl())
import numpy as np
import torch
torch.set_num_threads(1)
from stable_baselines3 import DDPG, TD3
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

zip_path, obs_path, out_prefix, env_id, seed, episodes, algo = sys.argv[1:8]
model = {"DDPG": DDPG, "TD3": TD3}[algo].load(zip_path, device="cpu")
assert type(model).__name__ == algo
actions, _ = model.predict(np.load(obs_path), deterministic=True)
np.save(out_prefix + "actions.npy", actions)
returns, lengths = evaluate_policy(
    model,
    make_vec_env(env_id, n_envs=1, seed=int(seed)),
    n_eval_episodes=int(episodes),
    deterministic=True,
    return_episode_rewards=True,
)
with open(out_prefix + "eval.json", "w") as f:
    json.dump({"returns": [float(r) for r in returns], "lengths": [int(n) for n in lengths]}, f)
"""


def run_python(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -c script args...`` in a fresh interpreter (one torch thread), checked."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"subprocess failed:\n{result.stderr[-4000:]}"
    return result


def assert_sb3_matches(
    zip_path: Path,
    actor: nn.Module,
    env_id: str,
    *,
    seed: int = 0,
    episodes: int = 2,
    n_obs: int = 1000,
    atol: float = 1e-5,
    algo: str = "DDPG",
) -> dict[str, Any]:
    """In a separate SB3-only process: ``DDPG.load(zip_path)`` (``algo``: DDPG or TD3) acts
    like ``actor`` and scores alike.

    Checks (1) ``predict(obs, deterministic=True)`` on ``n_obs`` random observations equals our
    actor's squashed actions mapped to the Box (max abs difference <= ``atol``), and (2)
    ``evaluate_policy`` on ``make_vec_env(env_id, seed=seed)`` gives the same episode lengths
    and returns as our ``evaluate(actor, make_env(env_id), episodes, seed)`` (SB3's Monitor
    rounds returns to 6 decimals). Returns SB3's episode returns/lengths.
    """
    zip_path = Path(zip_path).resolve()
    env = make_env(env_id)
    try:
        obs_dim = env.observation_space.shape[0]
        rng = np.random.default_rng(seed)
        obs = (2.0 * rng.standard_normal((n_obs, obs_dim))).astype(np.float32)
        with tempfile.TemporaryDirectory() as work:
            np.save(Path(work) / "obs.npy", obs)
            prefix = str(Path(work) / "sb3.")
            args = [str(zip_path), str(Path(work) / "obs.npy"), prefix, env_id, str(seed)]
            run_python(SB3_CHECK_SCRIPT, *args, str(episodes), algo, cwd=Path(work))
            sb3_actions = np.load(prefix + "actions.npy")
            sb3_eval = json.loads(Path(prefix + "eval.json").read_text())

        scaler = ActionScaler(env.action_space.low, env.action_space.high)
        actor_device = next(actor.parameters()).device
        with torch.no_grad():
            squashed = actor(torch.as_tensor(obs, device=actor_device)).cpu().numpy()
        ours = scaler.to_env(squashed)
        max_diff = float(np.max(np.abs(sb3_actions - ours)))
        assert max_diff <= atol, f"SB3 predict differs from our actor by {max_diff}"

        result = evaluate(actor, env, episodes, seed, actor_device)
    finally:
        env.close()
    assert result.lengths.tolist() == sb3_eval["lengths"]
    np.testing.assert_allclose(result.returns, sb3_eval["returns"], rtol=0, atol=1e-5)
    assert abs(result.mean_return - float(np.mean(sb3_eval["returns"]))) <= 1e-5
    return sb3_eval


# --------------------------------------------------------------------------------------------
# Fabricated run directories (random weights, the documented on-disk format)
# --------------------------------------------------------------------------------------------


def random_norms(module: nn.Module) -> nn.Module:
    """LayerNorm gains and biases away from their init (1, 0), so a test sees them."""
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.LayerNorm):
                layer.weight.uniform_(0.5, 1.5)
                layer.bias.uniform_(-0.5, 0.5)
    return module


@dataclass
class FakeRun:
    """A run directory written the way the training loop writes one, with random weights."""

    path: Path
    config: TrainConfig
    policies: dict[int, dict[str, Any]] = field(default_factory=dict)
    """step -> the dict saved in policies/step_N.pt."""
    best_step: int | None = None

    def actor(self, step: int) -> Actor:
        env = make_env(self.config.env_id)
        obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
        env.close()
        actor = Actor(
            obs_dim,
            act_dim,
            self.config.actor.hidden_sizes,
            layer_norm=self.config.actor.layer_norm,
        )
        actor.load_state_dict(self.policies[step]["actor"])
        return actor


def make_random_run(
    path: Path,
    env_id: str,
    actor_sizes: list[int],
    critic_sizes: list[int] | None = None,
    action_layer: int = 0,
    steps: tuple[int, ...] = (1000, 2000),
    best_step: int | None = None,
    layer_norm: bool = False,
) -> FakeRun:
    """Write config.yaml and policies/step_N.pt (and best.pt) with distinct random weights.

    Each step, and each target network, gets its own weights, so a test can tell which file
    and which network a zip was made from.
    """
    critic_sizes = list(critic_sizes or actor_sizes)
    config = TrainConfig(
        env_id=env_id,
        actor=NetworkConfig(hidden_sizes=list(actor_sizes), layer_norm=layer_norm),
        critic=NetworkConfig(hidden_sizes=critic_sizes, action_layer=action_layer),
    )
    path.mkdir(parents=True, exist_ok=True)
    save_config(config, path / CONFIG)
    env = make_env(env_id)
    obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    env.close()
    run = FakeRun(path=path, config=config, best_step=best_step)
    for step in steps:
        torch.manual_seed(step)
        policy: dict[str, Any] = {
            name: network.state_dict()
            for name, network in {
                "actor": random_norms(Actor(obs_dim, act_dim, actor_sizes, layer_norm=layer_norm)),
                "critic": Critic(obs_dim, act_dim, critic_sizes, action_layer),
                "actor_target": Actor(obs_dim, act_dim, actor_sizes, layer_norm=layer_norm),
                "critic_target": Critic(obs_dim, act_dim, critic_sizes, action_layer),
            }.items()
        }
        policy["step"] = step
        atomic_torch_save(policy, policy_path(path, step))
        run.policies[step] = policy
    if best_step is not None:
        atomic_torch_save(run.policies[best_step], path / POLICIES / BEST_POLICY)
    return run


def files_under(path: Path) -> set[str]:
    """Every file and folder below ``path`` (to assert that a failed command wrote nothing)."""
    return {str(p.relative_to(path)) for p in Path(path).rglob("*")}
