"""The `fvq` command, the top layer: it parses the command line and hands each subcommand to the layer that runs it."""
