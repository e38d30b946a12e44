"""What a pipeline is: tasks and their graph, the planner, task and run states, events and the
live run they fold into, errors. Beside them two rules every layer obeys: files nborch writes
are private (``private``) and secrets are masked (``secrecy``). Standard library only."""
