"""vadam-rl: deep RL that explores in parameter space with variational optimizers."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# Heavy or optional pieces are imported on first use, so `import vadam_rl` stays cheap and
# never needs SB3 or Ray.
_LAZY = {
    "load_sb3": "vadam_rl.sb3_bridge",
    "export_sb3": "vadam_rl.sb3_bridge",
    "TrainConfig": "vadam_rl.config",
    "load_preset": "vadam_rl.config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vadam_rl' has no attribute {name!r}")
