"""One module per `kvinject` command (see kvinject/cli.py): each has add_arguments(parser) and run(args) -> int."""


class UsageError(ValueError):
    """A user error (bad flag value, missing folder): ``kvinject`` prints the message on one line and exits 2."""
