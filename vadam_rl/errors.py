"""The one exception type the CLI turns into a single line on stderr and exit code 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (env id, preset, config key, run dir, file): say it in one line.

    Raise it *before* anything is written, so a rejected command leaves no files behind.
    """
