"""``vadam-rl export`` and ``vadam-rl eval``: a run's mean policy as an SB3 zip, and a policy's
mean return (a run directory or any SB3 DDPG/TD3 MlpPolicy zip)."""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import tyro

from vadam_rl.commands.options import option
from vadam_rl.envs import make_env
from vadam_rl.errors import UserError

if TYPE_CHECKING:
    from vadam_rl.agent.networks import Actor

# What needs torch or SB3 is imported inside the commands (torch takes seconds to load).


def export_command(
    run_dir: Annotated[tyro.conf.Positional[Path], option("RUN_DIR")],
    output: Annotated[
        Path | None,
        tyro.conf.arg(
            aliases=("-o",),
            metavar="ZIP",
            help_behavior_hint="(default: RUN_DIR/model.zip, model_best.zip, model_step_N.zip)",
        ),
    ] = None,
    checkpoint: Annotated[str, option("WHICH")] = "last",
    zoo_layout: Annotated[Path | None, option("DIR", "none")] = None,
    onnx: Annotated[Path | None, option("FILE", "none")] = None,
) -> None:
    """Export a run's mean policy as a Stable-Baselines3 zip (DDPG.load, or TD3.load for a TD3 run).

    The zip holds the mean policy only; the Vadam posterior stays in RUN_DIR/checkpoint.pt.

    Args:
        run_dir: The run directory (config.yaml, policies/).
        output: The zip to write.
        checkpoint: best, last (the most recent policy) or a step number N (policies/step_N.pt).
        zoo_layout: Write it only into this rl-baselines3-zoo log folder (and --output if given).
        onnx: Write the mean actor as this ONNX model instead (obs -> action in the env's bounds).
    """
    from vadam_rl.sb3.export import export_sb3, read_run_config, write_zoo_layout

    if onnx is not None:
        if output is not None or zoo_layout is not None:
            raise UserError("--onnx writes an ONNX model alone: drop --output and --zoo-layout")
        from vadam_rl.onnx_export import CHECK_OBSERVATIONS, export_onnx

        done = export_onnx(run_dir, onnx, checkpoint)
        print(
            f"wrote {done.path} from {done.source} (checked with onnxruntime on "
            f"{CHECK_OBSERVATIONS} observations: max |difference| {done.max_difference:.1e})"
        )
        return
    if zoo_layout is None:
        print(f"wrote {export_sb3(run_dir, output, checkpoint)}")
        return
    config = read_run_config(run_dir)
    with tempfile.TemporaryDirectory(prefix=".vadam-rl-export.") as staging:
        if output is None:  # the zip goes into the layout only
            path = export_sb3(run_dir, Path(staging) / "model.zip", checkpoint)
        else:
            path = export_sb3(run_dir, output, checkpoint)
            print(f"wrote {path}")
        exp_dir = write_zoo_layout(path, config, zoo_layout)
        exp_id = exp_dir.name.rsplit("_", 1)[1]
        print(
            f"wrote {exp_dir}; play it with: python -m rl_zoo3.enjoy --algo {config.algorithm} "
            f"--env {config.env_id} -f {zoo_layout} --exp-id {exp_id}"
        )


def eval_command(
    target: Annotated[tyro.conf.Positional[Path], option("RUN_DIR_OR_ZIP")],
    env: Annotated[str | None, option("ENV_ID", "the run's or the zip's")] = None,
    episodes: Annotated[int, option("N")] = 10,
    seed: Annotated[int, option("N")] = 0,
    video: Annotated[Path | None, option("MP4", "none")] = None,
    video_steps: Annotated[int | None, option("N", "the whole episode")] = None,
    device: Annotated[Literal["auto", "cpu", "cuda"], option("DEVICE")] = "auto",
    weights_only: bool = False,
    checkpoint: Annotated[str, option("WHICH")] = "last",
) -> None:
    """Evaluate a policy deterministically and print its mean return ± std.

    A run directory is evaluated with its most recent policy, the one export exports.
    A zip may be any Stable-Baselines3 DDPG/TD3 MlpPolicy model.

    Args:
        target: A run directory or a Stable-Baselines3 DDPG/TD3 zip.
        env: Environment id (needed for SB3 zips that vadam-rl did not export).
        episodes: Number of evaluation episodes.
        seed: Seed of the first reset (the same episodes as SB3's evaluate_policy on this seed).
        video: Also record one episode to this .mp4 (needs moviepy; MuJoCo needs MUJOCO_GL=egl).
        video_steps: Record at most N steps of that episode (a short clip; rl-zoo's -n).
        device: auto (CUDA if present), cpu or cuda.
        weights_only: Read only the zip's tensors: SB3 zips hold pickles, which run code.
        checkpoint: A run's policy: last (the most recent: the run's final policy once it
            finished, as in model.zip), best (the best evaluation's, chosen on evaluation
            episodes, so an optimistic pick) or a step number N.
    """
    from vadam_rl.commands.train import UNPICKLING_NOTE
    from vadam_rl.device import resolve_device
    from vadam_rl.evaluation import check_video_output, evaluate, record_video
    from vadam_rl.sb3.load import load_sb3, missing_env_message

    if episodes < 1:
        raise UserError(f"--episodes must be >= 1, got {episodes}")
    if not 0 <= seed < 2**63:  # (what gymnasium's reset accepts, as train's --seed)
        raise UserError(f"--seed must be in [0, 2**63), got {seed}")
    if video_steps is not None and video is None:
        raise UserError("--video-steps needs --video FILE.mp4")
    if video_steps is not None and video_steps < 1:
        raise UserError(f"--video-steps must be >= 1, got {video_steps}")
    if video is not None:
        check_video_output(video)
    torch_device = resolve_device(device)
    target = Path(target)
    if target.is_dir():
        actor, env_id, label = _run_dir_actor(target, env, checkpoint)
    elif target.is_file():
        if not weights_only:
            print(UNPICKLING_NOTE.format(path=target), file=sys.stderr)
        loaded = load_sb3(target, weights_only=weights_only)
        env_id = env or loaded.env_id
        if env_id is None:
            raise UserError(missing_env_message(target, loaded.refused_env_id))
        with contextlib.closing(make_env(env_id)) as probe_env:
            loaded.check_env(probe_env, env_id)
        actor, label = loaded.actor, f"{target} ({loaded.algorithm})"
    else:
        raise UserError(f"no such run directory or model file: {target}")
    actor = actor.to(torch_device)
    with contextlib.closing(make_env(env_id)) as eval_env:
        result = evaluate(actor, eval_env, episodes, seed, torch_device)
    print(
        f"{label} on {env_id}: return {result.mean_return:.2f} ± {result.std_return:.2f} "
        f"over {episodes} episodes (seed {seed}, mean length {result.mean_length:.0f})"
    )
    if video is not None:
        recorded = record_video(actor, env_id, video, seed, torch_device, max_steps=video_steps)
        steps = recorded.mean_length
        print(f"wrote {video} ({steps:.0f} steps, return {recorded.mean_return:.2f})")


def _run_dir_actor(run_dir: Path, env_id: str | None, checkpoint: str) -> tuple[Actor, str, str]:
    from vadam_rl.agent.networks import mean_actor
    from vadam_rl.sb3.export import policy_file, read_policy_file, read_run_config
    from vadam_rl.sb3.load import load_checked

    config = read_run_config(run_dir)
    source = policy_file(run_dir, checkpoint)
    weights = read_policy_file(source)
    env_id = env_id or config.env_id
    with contextlib.closing(make_env(env_id)) as env:
        obs_dim, act_dim = env.observation_space.shape[0], env.action_space.shape[0]
    actor = mean_actor(obs_dim, act_dim, config.actor)
    load_checked(actor, weights["actor"], "actor", str(source))
    return actor.requires_grad_(False), env_id, str(source)
