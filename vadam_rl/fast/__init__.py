"""Speed-ups applied from outside to the agent's one update and to acting.

Each computes what the plain code computes (tested against it); ``select`` is the one place
that decides which apply to a run.
"""
