"""TensorBoard logging with Stable-Baselines3's tag names, plus the posterior's own curves.

SB3 2.x tags used as-is: rollout/ep_rew_mean, rollout/ep_len_mean (last 100 episodes),
time/fps, train/actor_loss, train/critic_loss, train/learning_rate, train/n_updates,
eval/mean_reward, eval/mean_ep_length. Ours: posterior/sigma_mean/<param>,
posterior/sigma/<param> (histogram, at each evaluation), explore/action_distance
(mean ||a_behaviour - a_mean||_2). The x-axis is always environment steps.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor
from torch.utils.tensorboard import SummaryWriter

from vadam_rl.config import TrainConfig, flatten, to_dict
from vadam_rl.run_dir import is_disk_full


class RunLogger:
    """Writes one run's TensorBoard events into its run directory."""

    def __init__(self, run_dir: Path, purge_step: int | None = None) -> None:
        # purge_step drops events a killed run wrote after the checkpoint we resume from, so
        # the curves do not fold back on themselves.
        self.writer = SummaryWriter(log_dir=str(run_dir), purge_step=purge_step)

    def scalars(self, values: dict[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def histogram(self, tag: str, values: Tensor, step: int) -> None:
        self.writer.add_histogram(tag, values.detach().float().cpu(), step)

    def config(self, config: TrainConfig) -> None:
        """The resolved config as a two-column Markdown table (TensorBoard's Text tab)."""
        rows = ["| key | value |", "| --- | --- |"]
        rows += [f"| {key} | {value} |" for key, value in flatten(to_dict(config)).items()]
        self.writer.add_text("config", "\n".join(rows), 0)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception as err:  # the events not yet written are lost with a full disk,
            if not is_disk_full(err):  # and saying so must not hide why the run stopped
                raise
