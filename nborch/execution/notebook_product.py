"""Ploomber's ``nb`` product: a copy of the executed notebook, or its nbconvert export."""

from __future__ import annotations

import os

import nbformat

from . import outputs


def export_product(text: str, job, failed: bool) -> None:
    """Write an executed notebook (JSON ``text``) to the notebook product of ``job`` (an
    ``AttemptJob``): as is (``.ipynb``), or exported by nbconvert (``.html``, ``.md``, ...;
    ``exporter_name`` in the options chooses another exporter). As Ploomber does, a failed
    attempt leaves an exported product as it was and writes the partial notebook beside it
    as ``.ipynb`` (removed by the next success)."""
    path, options = job.notebook_product, dict(job.export_options)
    exporter = options.pop("exporter_name", None) or _EXPORTERS.get(
        os.path.splitext(path)[1].lower())
    partial = os.path.splitext(path)[0] + ".ipynb"
    if exporter is None:  # the notebook itself
        outputs.write_text(path, text)
        return
    if failed:
        outputs.write_text(partial, text)
        return
    import nbconvert
    content, _ = nbconvert.get_exporter(exporter)(**options).from_notebook_node(
        nbformat.reads(text, as_version=4))
    if isinstance(content, bytes):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "wb") as out:
            out.write(content)
    else:
        outputs.write_text(path, content)
    if "://" not in partial and partial not in job.products.values() and \
            os.path.isfile(partial):
        os.remove(partial)


_EXPORTERS = {".html": "html", ".md": "markdown", ".tex": "latex", ".rst": "rst"}
