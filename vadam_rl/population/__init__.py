"""Population training: K agents (one preset, K seeds) in one process, stacked.

Every network weight, optimizer state, replay buffer and exploration state carries a leading
agent dimension, so one batched matmul serves all agents; each agent keeps its own envs,
generator and run directory, and trains as the single run of its seed would (up to float
reassociation in the batched matmuls). See ``train_population``.
"""

from vadam_rl.population.train import train_population

__all__ = ["train_population"]
