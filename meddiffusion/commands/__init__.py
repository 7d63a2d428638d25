"""One module per general ``meddiff`` subcommand; task commands come from the task registry.

Each module exposes ``add_parser(subparsers)`` (registers the subcommand with its ``--help``
and example) and ``run(args, progress) -> dict`` (does the work, returns the result payload
that becomes the final ``result`` event).  A task's inference command is generated from its
``TaskSpec`` by ``task_command``; its further commands (``spec.commands``) are modules like
these.  Heavy imports (torch, networks) happen inside ``run`` so ``meddiff --help`` stays instant.
"""

#: general subcommands before the tasks' (``meddiff --help`` order), and those after them
BEFORE_TASKS = ("info", "agatston", "phantom")
AFTER_TASKS = ("train", "runs", "bench", "study")
