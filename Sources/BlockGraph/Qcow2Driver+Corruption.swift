import BlockCommon
import BlockIO
import ControlThread
import Glibc
import Logging
import Qcow2Format

/// What the control thread found after an IOThread met inconsistent metadata: QEMU's
/// BLOCK_IMAGE_CORRUPTED members (`offset` and `size`: the bad range in the image file,
/// when known; `fatal`: the image was marked corrupt and its writes now fail).
public struct Qcow2CorruptionFinding: Sendable, Equatable {
    public var message: String
    public var offset: UInt64?
    public var size: UInt64?
    public var fatal: Bool
}

/// Carries the data path's one report of corrupt metadata from the IOThread that met it
/// to its driver on the control thread (a Task: no GS call on the IOThread; at most one per
/// image, so the allocation it costs is off the hot path).
@ControlActor
final class Qcow2CorruptionRelay {
    weak var driver: Qcow2Driver?

    nonisolated init() {}

    /// The closure Qcow2IO calls (on an IOThread): at most twice per image, for its first
    /// failure of any kind and for its first inconsistent metadata.
    nonisolated func reporter(subject: String, filename: String, logger: Logger)
        -> @Sendable (_ guestOffset: UInt64, _ problem: Qcow2EntryProblem) -> Void {
        { [self] guestOffset, problem in
            // Logged here at once (the guest sees the error now); the verdict follows from the control thread.
            logger.error("\(subject) ('\(filename)'): corrupt metadata at guest offset \(guestOffset) (\(problem)); requests there fail with EIO, further errors are not logged; check the image with qemu-img check")
            guard Qcow2IO.isMetadataProblem(problem) else { return }
            Task { @ControlActor in self.driver?.metadataCorrupted(guestOffset: guestOffset, problem: problem) }
        }
    }
}

extension Qcow2Driver {
    /// Control thread, once per image: finds whether the bad entry is this image's own
    /// (then, as QEMU, marks the image corrupt: the header's corrupt bit when it is
    /// writable, and writes fail with EIO from now on) or one of its backing chain's, logs
    /// it for the operator and tells the graph (the BLOCK_IMAGE_CORRUPTED event).
    func metadataCorrupted(guestOffset: UInt64, problem: Qcow2EntryProblem) {
        guard !corruptionHandled else { return }
        corruptionHandled = true
        let logger = Qcow2ChainOpening().logger
        var located = Qcow2CorruptionLocator(fd: image.fd, layout: image.layout).locate(guestOffset: guestOffset)
        if located == nil && problem == .writeOverlapsMetadata {
            // The allocator refused this image's own entry (it never looks below): corrupt here.
            located = .init(message: "a write at guest offset 0x\(String(guestOffset, radix: 16)) would overwrite metadata", offset: nil, size: nil)
        }
        var finding: Qcow2CorruptionFinding
        if let located {
            let writable = image.writable
            image.markCorrupt()
            finding = Qcow2CorruptionFinding(message: located.message, offset: located.offset, size: located.size, fatal: writable)
            if writable, let failure = setCorruptBit() {
                logger.error("qcow2 node '\(node)': cannot set the corrupt bit in the header of '\(filename)': \(failure); writes fail with EIO anyway")
            }
            logger.critical("qcow2 node '\(node)': '\(filename)' has corrupt metadata: \(located.message) (host offset \(located.offset.map { "0x" + String($0, radix: 16) } ?? "unknown")); \(writable ? "image marked corrupt: writes fail with EIO, reads elsewhere go on" : "reads there fail with EIO"); stop its users, then run qemu-img check -r all '\(filename)'")
        } else {
            finding = Qcow2CorruptionFinding(message: "metadata of the backing chain is corrupt at guest offset \(guestOffset) (\(problem))",
                                             offset: nil, size: nil, fatal: false)
            logger.critical("qcow2 node '\(node)': the backing chain of '\(filename)' has corrupt metadata at guest offset \(guestOffset) (\(problem)); reads there fail with EIO; run qemu-img check -r all on its backing files once nothing uses them")
        }
        onCorruption?(finding)
    }

    /// Sets incompatible feature bit 1 (corrupt) in a version 3 header and makes it durable:
    /// QEMU then opens the image read-only only, and qemu-img info shows `corrupt: true`.
    /// Version 2 headers have no such bit (QEMU too marks them in memory only). Nil if done.
    private func setCorruptBit() -> String? {
        guard header.version >= 3 else { return nil }
        let fieldOffset: UInt64 = 72
        var raw: UInt64 = 0
        guard pread(image.fd, &raw, 8, off_t(fieldOffset)) == 8 else { return String(cString: strerror(errno)) }
        let features = UInt64(bigEndian: raw) | Qcow2Features.corrupt
        var bytes = features.bigEndian
        var rc = Qcow2SyncIO.write(image.fd, &bytes, 8, at: fieldOffset)
        if rc == 0 { rc = Qcow2SyncIO.datasync(image.fd) }
        if rc < 0 { return String(cString: strerror(-rc)) }
        header.incompatibleFeatures = features
        return nil
    }
}

/// Looks up, with pread on the control thread, what this image's own tables say about a
/// guest offset, and names the entry if it is the bad one.
struct Qcow2CorruptionLocator {
    let fd: Int32
    let layout: Qcow2Layout

    struct Located {
        var message: String
        var offset: UInt64?
        var size: UInt64?
    }

    /// Nil when this image's entries for `guestOffset` are sound (the problem lies below).
    func locate(guestOffset: UInt64) -> Located? {
        let clusterBits = UInt64(layout.clusterBits)
        let l1Index = guestOffset >> (clusterBits + UInt64(layout.l2Bits))
        guard l1Index < UInt64(layout.l1Size), let l1Raw = readEntry(at: layout.l1Offset + l1Index * 8) else { return nil }
        let hex = { (value: UInt64) in "0x" + String(value, radix: 16) }
        guard let tableOffset = Qcow2Entries.l2TableOffset(l1Entry: l1Raw, clusterBits: layout.clusterBits) else {
            return Located(message: "L1 entry \(l1Index) (\(hex(l1Raw))) is invalid", offset: l1Raw & Qcow2Entries.offsetMask, size: layout.clusterSize)
        }
        if tableOffset == 0 { return nil }
        if let problem = layout.checkL2Table(tableOffset) {
            return Located(message: "L2 table offset \(hex(tableOffset)) (L1 index \(l1Index)): \(problem)", offset: tableOffset, size: layout.clusterSize)
        }
        let index = (guestOffset >> clusterBits) & ((1 << UInt64(layout.l2Bits)) - 1)
        guard let raw = readEntry(at: tableOffset + index * 8) else { return nil }
        let entry = Qcow2Entries.decodeL2(raw, clusterBits: layout.clusterBits)
        if case .zero = entry, raw & Qcow2Entries.copiedFlag != 0, case let hostOffset = raw & Qcow2Entries.offsetMask, hostOffset != 0,
           layout.overlapsMetadata(hostOffset, length: layout.clusterSize) {
            // A preallocated zero cluster on metadata: reads are zeroes, a write would land there.
            return Located(message: "L2 entry for guest offset \(hex(guestOffset)) (\(hex(raw))): its preallocated zero cluster overlaps the header, L1 or refcount table",
                           offset: hostOffset, size: layout.clusterSize)
        }
        guard case .corrupt(let problem) = layout.check(entry) else { return nil }
        var hostOffset = raw & Qcow2Entries.offsetMask
        if raw & Qcow2Entries.compressedFlag != 0 {
            hostOffset = raw & ((1 << (62 - (clusterBits - 8))) - 1)
        }
        return Located(message: "L2 entry for guest offset \(hex(guestOffset)) (\(hex(raw))): \(problem)", offset: hostOffset, size: layout.clusterSize)
    }

    private func readEntry(at offset: UInt64) -> UInt64? {
        var raw: UInt64 = 0
        guard pread(fd, &raw, 8, off_t(offset)) == 8 else { return nil }
        return UInt64(bigEndian: raw)
    }
}
