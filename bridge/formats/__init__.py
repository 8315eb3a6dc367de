"""Pure readers and writers for the data the bridge moves: eval result files (`bridge.formats.evals`), run payloads."""
