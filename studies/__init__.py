"""Studies: what a study is and how it runs. Specifications (``spec``) and presets, the
search engine (``engine``, with the samplers and the bracket planner), the one best rule
(``best``), SQL storage (``storage``), plain records of trials (``records``) built from SQL
rows (``results``), and the statistics on them (``analysis``).

It sits above magma and worker, and never imports the dashboards or the service."""
