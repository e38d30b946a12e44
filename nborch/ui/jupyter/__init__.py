"""nborch in Jupyter: the ``%%orchestrate`` magic, the live run widget and the runs dashboard.

Load it with ``%load_ext nborch`` (or ``c.InteractiveShellApp.extensions = ["nborch"]``).
"""
