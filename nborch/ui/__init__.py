"""What people see and type: the command line, the console, graphs, HTML views, the report,
task logs and the Jupyter magic and widgets."""
