/// The `--help` text.
public let spindleHelpText = "Usage: spindle [options]\n"
