"""How a pipeline is read and checked: YAML files, folders and arrows (``loader``), Ploomber
projects (``ploomber``), templating, notebooks and scripts, and ``prepare``/``validate``."""
