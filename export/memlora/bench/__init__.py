"""``memlora bench``: ``run.py`` (the verb: plan, spawn, collect), ``job.py`` (the record one
measurement runs from), ``worker.py`` (one measurement in a fresh process), ``rows.py`` (results
-> rows and goal figures), ``report.py`` (bench.md and plots), ``env.py`` (machine, versions,
memory bandwidth)."""
