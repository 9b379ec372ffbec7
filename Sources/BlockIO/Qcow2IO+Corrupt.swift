import Qcow2Format
import Synchronization

/// Marking an image corrupt (QEMU's BLOCK_IMAGE_CORRUPTED): the IOThread that meets
/// inconsistent metadata fails that request and reports it once; the control thread looks
/// at the image and, if the image's own metadata is bad, marks it: from then on writes fail
/// with EIO (reads elsewhere go on) and the node shows read-only.
extension Qcow2IO {
    /// Problems of the image's metadata (an entry pointing outside the file, misaligned, into
    /// metadata): not a failed allocation (a full disk, an I/O error) nor compressed bytes
    /// that do not inflate (data, as QEMU treats them).
    @inlinable
    public static func isMetadataProblem(_ problem: Qcow2EntryProblem) -> Bool {
        problem != .allocationFailed && problem != .compressedDataInvalid
    }

    /// Whether the control thread marked the image corrupt.
    @inline(__always)
    public var isMarkedCorrupt: Bool { markedCorrupt.load(ordering: .relaxed) }

    /// Control thread: writes fail with EIO from now on (requests in flight finish as they were).
    public func markCorrupt() {
        markedCorrupt.store(true, ordering: .relaxed)
    }
}
