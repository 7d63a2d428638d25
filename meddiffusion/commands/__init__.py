"""One module per ``meddiff`` subcommand.

Each module exposes ``add_parser(subparsers)`` (registers the subcommand with its ``--help``
and example) and ``run(args, progress) -> dict`` (does the work, returns the result payload
that becomes the final ``result`` event).  Heavy imports (torch, networks) happen inside
``run`` so ``meddiff --help`` stays instant.
"""

#: subcommands in the order ``meddiff --help`` lists them
COMMANDS = ("info", "agatston", "ldct_denoise", "simulate_ldct", "ldct_adapt", "phantom", "simulate_motion",
            "motion_correct", "train", "bench")
