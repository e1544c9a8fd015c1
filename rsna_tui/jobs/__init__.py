"""Jobs: one engine stage run in its own process, recorded in the workspace's ``jobs.db``.

- :mod:`~rsna_tui.jobs.manager` submits, queues, starts, refreshes, cancels, retries, resumes;
- :mod:`~rsna_tui.jobs.runner` is the job process (``python -m rsna_tui.jobs.runner <job folder>``),
  with :mod:`~rsna_tui.jobs.monitor` sampling its resources;
- :mod:`~rsna_tui.jobs.events` is the job folder's format, :mod:`~rsna_tui.jobs.fold` brings it
  into :mod:`~rsna_tui.jobs.store` (tables in :mod:`~rsna_tui.jobs.models`);
- :mod:`~rsna_tui.jobs.executor` is the backend interface, :mod:`~rsna_tui.jobs.local` the local
  one, :mod:`~rsna_tui.jobs.scheduler` the detached process that starts queued jobs;
- :mod:`~rsna_tui.jobs.planner` plans a stage's upstream jobs (reuse / wait / run by fingerprint)
  from the inputs of ``engine/stages.py``, :mod:`~rsna_tui.jobs.pipeline` aims it at predict /
  evaluate, :mod:`~rsna_tui.jobs.inputs` resolves ``job:<id>/<artefact>`` parameters in the runner.
"""
