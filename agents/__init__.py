"""Agent presets (YAML). Shipped inside the package as ``vadam_rl.presets``."""
