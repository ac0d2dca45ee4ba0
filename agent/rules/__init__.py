"""CEL rules carried by policies: compiled per config, run on the events their policy selects."""
