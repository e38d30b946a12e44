"""Ploomber projects: a Ploomber ``pipeline.yaml`` (and its env file) read into a Pipeline.

Ploomber's repository was archived in 2025; its projects run here unchanged (SPEC 1.6). This
package only translates: each task becomes an ordinary notebook task with a
``core.task.ProductConvention`` (products for ``upstream``, ``product`` always injected,
lenient or strict parameters, the executed notebook also written to the ``nb`` product and
exported by nbconvert when it is not ``.ipynb``); nothing outside this package knows
Ploomber.

Ploomber's rules followed here, checked against Ploomber 0.23.3 (docs/ploomber.md lists every
key of its spec and what nborch does with it):

- task names default to the source's file stem (a function's name for a dotted path);
- the kernel runs in the pipeline's folder (``local_execution: true``: the notebook's);
- products are relative to the pipeline's folder and reach the task as absolute paths;
- ``upstream["get"]`` is that task's product (a path, or a mapping of names to paths); a
  wildcard ``upstream = ["fit-*"]`` gives ``upstream["fit-*"] == {"fit-0": ..., ...}``;
- grids (``grid``): see ``grid``; computed values (``module::function``): see ``functions``;
- placeholders ``{{here}}``, ``{{cwd}}``, ``{{root}}``, ``{{user}}``, ``{{now}}``,
  ``{{env.VAR}}`` and the keys of the env file are rendered in every value (see ``env``).

Modules: ``keys`` (the spec's keys: read, ignored, refused), ``env`` (placeholders and the env
file), ``grid`` (grids and ``[[placeholders]]``), ``functions`` (function tasks, hooks,
computed values), ``reader`` (the spec into a Pipeline), ``conventions`` (what a task
carries while it is read, and the generic convention it becomes).
"""

from .conventions import looks_like_ploomber

# ``reader.load`` (the spec into a Pipeline) is imported from ``reader`` itself, only when a
# Ploomber spec is met.
__all__ = ["looks_like_ploomber"]
