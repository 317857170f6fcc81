"""A run's mean actor as an ONNX model: observations in, actions in the env's bounds out.

For deploying a policy without PyTorch (onnxruntime, TensorRT, a browser). The model is the
deterministic mean policy, pi(s) = low + (tanh(MLP(s)) + 1) / 2 * (high - low), exactly the
action ``vadam-rl eval`` and SB3's ``predict(deterministic=True)`` take; the posterior and
the critic stay in the run directory. Needs the ``vadam-rl[onnx]`` extra (onnx, onnxscript,
and onnxruntime, with which every export is checked).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from vadam_rl.agent.networks import mean_actor
from vadam_rl.envs import make_env
from vadam_rl.errors import UserError
from vadam_rl.run_dir import atomic_write_bytes
from vadam_rl.sb3.export import policy_file, read_policy_file, read_run_config
from vadam_rl.sb3.load import load_checked

CHECK_OBSERVATIONS = 1000
TOLERANCE = 1e-5
"""Largest |onnxruntime - torch| an export may show on the check observations: float32
reassociation in three small matmuls stays near 1e-7 (measured 2e-7)."""


class BoundedActor(nn.Module):
    """The actor followed by the map from [-1, 1] to the env's Box (``ActionScaler.to_env``).

    obs: (batch, obs_dim) float32 -> action: (batch, act_dim) float32.
    """

    def __init__(self, actor: nn.Module, low: np.ndarray, high: np.ndarray) -> None:
        super().__init__()
        self.actor = actor
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32))
        self.register_buffer("half_range", torch.as_tensor((high - low) / 2, dtype=torch.float32))

    def forward(self, obs: Tensor) -> Tensor:
        return self.low + (self.actor(obs) + 1.0) * self.half_range


@dataclass
class OnnxExport:
    path: Path
    source: Path
    max_difference: float


def export_onnx(run_dir: Path, output: Path, checkpoint: str = "last") -> OnnxExport:
    """Write the run's mean actor (``checkpoint``: best, last or a step) to ``output`` and
    check it with onnxruntime against the torch actor; all checks before anything is
    written, the file through temp + rename."""
    output = Path(output)
    if output.suffix != ".onnx":
        raise UserError(f"--onnx {output}: the file name must end in .onnx")
    if output.is_dir() or not output.parent.is_dir():
        raise UserError(f"--onnx {output}: not a file in an existing folder")
    _check_onnx_installed()
    config = read_run_config(run_dir)
    source = policy_file(run_dir, checkpoint)
    with contextlib.closing(make_env(config.env_id)) as env:
        obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
        low, high = env.action_space.low, env.action_space.high
    actor = mean_actor(obs_dim, act_dim, config.actor)
    load_checked(actor, read_policy_file(source)["actor"], "actor", str(source))
    model = BoundedActor(actor, low, high).eval()
    program = _export(model, obs_dim)
    with tempfile.TemporaryDirectory(prefix="vadam-rl-onnx-") as staging:
        staged = Path(staging) / "model.onnx"
        program.save(str(staged))
        gap = check_with_onnxruntime(staged, model, obs_dim)
        if not gap <= TOLERANCE:
            raise UserError(f"the ONNX model differs from the actor by {gap:.2e}; not written")
        atomic_write_bytes(output, staged.read_bytes())
    return OnnxExport(output, source, gap)


def _check_onnx_installed() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401 - torch's ONNX exporter needs it
    except ImportError as err:
        raise UserError(
            f"ONNX export needs the onnx extra ({err.name} is not installed): "
            "pip install 'vadam-rl[onnx]'"
        ) from None


def _export(model: nn.Module, obs_dim: int) -> torch.onnx.ONNXProgram:
    # torch's exporter logs and warns about what does not concern an MLP (torchvision ops,
    # deprecations of its own internals): the user's terminal gets our one line instead.
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            return torch.onnx.export(
                model,
                (torch.zeros(2, obs_dim),),
                input_names=["obs"],
                output_names=["action"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                dynamo=True,
                verbose=False,
            )
    finally:
        onnx_logger.setLevel(level)


def check_with_onnxruntime(path: str | Path, model: nn.Module, obs_dim: int) -> float:
    """Largest |onnxruntime - torch| over ``CHECK_OBSERVATIONS`` observations drawn from
    N(0, 3^2) (MuJoCo observations are unbounded; this covers their usual range)."""
    import onnxruntime

    obs = torch.randn(CHECK_OBSERVATIONS, obs_dim, generator=torch.Generator().manual_seed(0)) * 3
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["action"], {"obs": obs.numpy()})
    with torch.no_grad():
        want = model(obs).numpy()
    return float(np.abs(got - want).max())
