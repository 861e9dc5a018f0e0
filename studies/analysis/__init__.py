"""The statistics of a study: pure functions of its records (``studies.records``) that
return plain dataclasses, with no database, figures or web framework, so the API, the CLI
and the dashboards all compute the same numbers."""
