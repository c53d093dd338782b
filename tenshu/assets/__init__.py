"""Files that ship inside the package: the built-in default model (tenshu-tiny/)."""
