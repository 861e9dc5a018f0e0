"""Every read and write the engine and the API make, as small functions on a Session, one
module a concern, so the queries the indexes serve are easy to find:

- ``submissions``: the API's writes on a study (submit it, idempotently; cancel; delete)
- ``lease``: a driver's claim on a study (claim, heartbeat, release on finish)
- ``trial_lifecycle``: a study's trials, created queued, run, finished or requeued
- ``metric_ingest``: the metric rows trials report, with their progress and live events
- ``event_log``: a study's event stream, written in commit order and read by cursor
- ``reads``: what the API and the dashboards list and page through
- ``best_sql``: the best rule of ``studies.best``, as one SQL query

Callers import the module of the concern they use (``from studies.storage.repository
import lease``); this package re-exports nothing.
"""
