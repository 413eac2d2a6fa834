"""Reports over evaluation runs, one-way from data to page: ``model`` (runs, scored datasets, blocks) and
``stats``/``breakdowns`` (pure numpy) <- ``loading`` (results.json, data files, per-question scores),
``grouping`` and ``figures`` <- ``build`` (the blocks and the files) -> ``render`` (Markdown, CSV, and HTML
through the templates of :mod:`xlqa.web`)."""
