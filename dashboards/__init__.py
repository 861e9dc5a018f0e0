"""Dashboards: a study's Plotly figures (``figures``), what each page shows (``views``),
figures as files (``export``) and a synthetic study to look at (``sample``).

The statistics the figures draw live below, in ``studies.analysis``; only the service's
pages router imports this package."""
