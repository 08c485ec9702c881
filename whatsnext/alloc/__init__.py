"""Automatic allocation: ``whatsnext alloc run`` submits SLURM jobs or RUN:AI workloads that each
start workers (``whatsnext worker --forever --idle-timeout ...``) when an allocation queue's
projects have work no live worker can take, and cancels those not started when the work is gone.

- :mod:`.plan`: the pure decisions (what fits a queue, how many to submit, which to cancel, the
  submission rate and the backoff after failures);
- :mod:`.pilot`: what an allocation runs (its workers' command lines, the shell script);
- :mod:`.slurm`, :mod:`.runai`: the schedulers' commands, states and reconciliation;
- :mod:`.api`: the server's allocation API; :mod:`.loop`: the loop that ties them together.
"""
