"""One module per `kvinject` command (see kvinject/cli.py): each has add_arguments(parser) and run(args) -> int."""
