"""CLI subcommands owned by the import engine (registered in :data:`importd.cli.EXTERNAL`).

Each module has ``add_arguments(parser)`` and ``run(args, settings) -> int``.
"""
