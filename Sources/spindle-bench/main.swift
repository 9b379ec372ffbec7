print("spindle-bench: not implemented yet")
