/// The paired run's options (--pair-socket, --pair-packed, --slice-ms) and their checks.
extension BenchOptions {
    /// Whether a second device is driven in alternating slices (PairedRun).
    var isPaired: Bool { pairSocket != nil }

    /// The second device's ring layout: --pair-packed, else the first device's.
    var pairIsPacked: Bool { pairPacked ?? packed }

    /// Refuses the combinations a paired run does not support, each with what to do.
    static func checkPairing(_ options: BenchOptions, sliceGiven: Bool) throws(BenchUsageError) {
        guard let pair = options.pairSocket else {
            if options.pairPacked != nil || sliceGiven {
                throw BenchUsageError("--pair-packed and --slice-ms apply only to a paired run: give --pair-socket PATH too")
            }
            return
        }
        guard !pair.isEmpty, pair != options.socket else {
            throw BenchUsageError("--pair-socket must name a second device's socket, not '\(pair)' (--socket is '\(options.socket)')")
        }
        guard options.queues == 1 else {
            throw BenchUsageError("--pair-socket drives one queue on each device from one thread: give --queues 1 (not \(options.queues)), or leave --pair-socket out")
        }
        guard !options.dirtyLog else {
            throw BenchUsageError("--dirty-log is not supported in a paired run (--pair-socket): measure it unpaired")
        }
    }
}
