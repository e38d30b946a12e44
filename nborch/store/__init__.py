"""What is recorded: runs, task runs, attempts, values and errors in SQLite, and the run
folders beside it."""
