"""Example gradprune plugins, registered through entry points (see pyproject.toml).

Nothing is imported here: gradprune imports each plugin's module only when a recipe picks it.
"""
