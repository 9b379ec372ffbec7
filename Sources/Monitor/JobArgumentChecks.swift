/// Argument checks the block-job commands (blockdev-mirror, block-commit, block-stream)
/// share, with QEMU's texts where QEMU has one.
enum JobArgumentChecks {
    /// on-error, on-source-error, on-target-error: Spindle always ends the job (report).
    static func reportOnly(_ name: String, _ value: String?) throws(QMPError) {
        if let value, value != "report" {
            throw QMPError("\(name)=\(value) is not supported by Spindle; errors always end the job (report)")
        }
    }

    /// `speed` in bytes per second (absent: 0, unlimited); QEMU refuses a negative one.
    static func speed(_ value: Int64?) throws(QMPError) -> UInt64 {
        if let value, value < 0 { throw QMPError("Parameter 'speed' expects a non-negative value") }
        return UInt64(value ?? 0)
    }
}
