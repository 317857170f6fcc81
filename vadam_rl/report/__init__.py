"""The report of a grid of runs, one job per module, imported in this order: ``loading``
(run directories) -> ``statistics`` (aggregates over seeds, comparisons) -> ``tables``
(results.md, results.csv) and ``figures`` (the PNGs). ``vadam-rl report`` is
``vadam_rl.commands.report``."""
