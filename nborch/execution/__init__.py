"""How one attempt runs: the attempt and command runners, kernels and their fork server,
the papermill engine, output and value limits, product paths, and the executors."""
