"""One module per `vidgen` subcommand. Each has `add_parser(subparsers)`; the parser's `run`
default is called with the parsed arguments and returns an exit code."""
