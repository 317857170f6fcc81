"""Stable-Baselines3's TD3 with the settings of vadam-rl's ``td3`` preset, as a reference curve.

The TD3 paper's settings (Fujimoto et al. 2018, as in ``agents/td3.yaml``): [400, 300] ReLU
actor and twin critics, Adam 1e-3, batch 100, tau 0.005, gamma 0.99, policy delay 2, target
noise 0.2 clipped at 0.5, Gaussian exploration 0.1 of the action range, uniformly random
actions for the first 10k steps on HalfCheetah and Ant (1k elsewhere). The mean policy is
evaluated every ``--eval-every`` steps over ``--eval-episodes`` episodes, as vadam-rl does,
and the evaluations go to a CSV with the columns of a run's ``evaluations.csv``:

    python scripts/sb3_td3_reference.py --seed 0 --total-steps 150000 --out sb3_td3_s0.csv
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import TD3
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.noise import NormalActionNoise


class Evaluations(BaseCallback):
    """The mean policy's return every ``every`` steps (and at the end), to a CSV."""

    def __init__(self, env_id: str, every: int, episodes: int, seed: int, out: Path) -> None:
        super().__init__()
        self.eval_env = gym.make(env_id)
        self.every, self.episodes, self.seed, self.out = every, episodes, seed, out
        self.started = time.perf_counter()
        self.rows: list[dict] = []

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            self.evaluate()
        return True

    def evaluate(self) -> None:
        returns, lengths = evaluate_policy(
            self.model,
            self.eval_env,
            n_eval_episodes=self.episodes,
            deterministic=True,
            return_episode_rewards=True,
        )
        self.rows.append(
            {
                "step": self.num_timesteps,
                "mean_return": float(np.mean(returns)),
                "std_return": float(np.std(returns)),
                "mean_length": float(np.mean(lengths)),
                "episodes": self.episodes,
                "wall_time_s": time.perf_counter() - self.started,
            }
        )
        with self.out.open("w", newline="") as f:  # rewritten whole: a kill keeps the rows
            writer = csv.DictWriter(f, fieldnames=list(self.rows[0]))
            writer.writeheader()
            writer.writerows(self.rows)
        print(f"step {self.num_timesteps:>9,}  eval return {self.rows[-1]['mean_return']:9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="HalfCheetah-v5")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--total-steps", type=int, default=150_000)
    parser.add_argument("--eval-every", type=int, default=5_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)  # as vadam-rl trains: one thread per run
    env = gym.make(args.env)
    act_dim = env.action_space.shape[0]
    learning_starts = 10_000 if args.env.startswith(("HalfCheetah", "Ant")) else 1_000
    model = TD3(
        "MlpPolicy",
        env,
        learning_rate=1e-3,
        buffer_size=1_000_000,
        learning_starts=learning_starts,
        batch_size=100,
        tau=0.005,
        gamma=0.99,
        train_freq=1,
        gradient_steps=1,
        # The action range is [-1, 1] on MuJoCo tasks: 0.1 of it is std 0.1.
        action_noise=NormalActionNoise(np.zeros(act_dim), 0.1 * np.ones(act_dim)),
        policy_delay=2,
        target_policy_noise=0.2,
        target_noise_clip=0.5,
        policy_kwargs={"net_arch": [400, 300]},
        device="cpu",
        seed=args.seed,
    )
    callback = Evaluations(args.env, args.eval_every, args.eval_episodes, args.seed, args.out)
    model.learn(total_timesteps=args.total_steps, callback=callback)
    if not callback.rows or callback.rows[-1]["step"] != args.total_steps:
        callback.evaluate()


if __name__ == "__main__":
    main()
