"""vadam-rl: deep RL that explores in parameter space with variational optimizers."""

from __future__ import annotations

from typing import Any

from vadam_rl.version import __version__ as __version__


def __getattr__(name: str) -> Any:
    # Imported on first use, so `import vadam_rl` stays cheap and never needs SB3 or Ray.
    if name in ("load_sb3", "export_sb3"):
        from vadam_rl.sb3 import export

        return getattr(export, name)
    if name in ("TrainConfig", "load_preset"):
        from vadam_rl import config

        return getattr(config, name)
    raise AttributeError(f"module 'vadam_rl' has no attribute {name!r}")
