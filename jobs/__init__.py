"""Entry points: each module parses options, builds a config and calls the library."""
