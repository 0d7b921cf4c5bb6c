"""``python -m harness``'s subcommands, one module each."""
