"""What every subcommand's options share: placeholders, and each default said once."""

from __future__ import annotations

import tyro


def option(metavar: str | None = None, default: str | None = None) -> object:
    """tyro settings for an option: its placeholder, and the default said once (in words where
    the preset decides it) instead of tyro's "(default: None)"."""
    return tyro.conf.arg(
        metavar=metavar, help_behavior_hint=None if default is None else f"(default: {default})"
    )
