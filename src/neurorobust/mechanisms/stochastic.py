"""Placeholder: being written (see the matching issue). Registers nothing yet."""
