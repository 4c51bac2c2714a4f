"""The `bakery` command line: Typer only, one module per group of verbs, no policy."""
