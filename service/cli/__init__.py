"""The command-line edge: `tapedeck` and its subcommands, the dev supervisor, a Redis launcher."""
