import CSpindle

/// The frontend's dirty log as the data path marks it (vhost-user "Migration"): one bit per
/// 4 KiB page of guest-physical memory, `page = gpa >> 12`, byte `page >> 3`, bit
/// `page & 7`. QEMU harvests it with atomic exchanges of u64 chunks, so bits are set with an
/// atomic OR of the u64 word holding them (the same bit on a little-endian host; the mask is
/// stored little-endian so it is the same bit anywhere).
///
/// A plain pair of pointer and size, lent to IOThreads without reference counting; the
/// mapping behind it is owned by `DirtyLog`, which the session keeps alive until no queue
/// holds this any more.
public struct DirtyLogBitmap: @unchecked Sendable, Equatable {
    public static let pageShift: UInt64 = 12
    public static let pageSize: UInt64 = 1 << pageShift

    @usableFromInline let words: UnsafeMutablePointer<UInt64>
    /// u64 words in the log (its size / 8).
    public let wordCount: Int

    /// `base` must stay mapped and 8-byte aligned for `wordCount` words while this is used.
    public init(words: UnsafeMutablePointer<UInt64>, wordCount: Int) {
        self.words = words
        self.wordCount = wordCount
    }

    /// Guest-physical bytes the log covers (64 pages per word).
    public var coveredBytes: UInt64 { UInt64(wordCount) &* 64 &* Self.pageSize }

    /// Marks every page of [gpa, gpa + length). Returns how many pages lay beyond the log and
    /// were not marked (0 normally; the caller reports them). A range running past the end
    /// of the address space is cut there.
    @inlinable
    public func mark(gpa: UInt64, length: UInt64) -> UInt64 {
        guard length > 0 else { return 0 }
        let (end, wrapped) = gpa.addingReportingOverflow(length - 1)
        let firstPage = gpa >> Self.pageShift
        let lastPage = (wrapped ? UInt64.max : end) >> Self.pageShift
        let pagesInLog = UInt64(wordCount) << 6
        var missed: UInt64 = 0
        if lastPage >= pagesInLog { missed = lastPage - max(firstPage, pagesInLog) + 1 }
        guard firstPage < pagesInLog else { return missed }
        let last = min(lastPage, pagesInLog - 1)
        var page = firstPage
        while page <= last {
            let word = Int(page >> 6)
            let firstBit = page & 63
            let lastBit = min(63, firstBit + (last - page))
            // Bits firstBit...lastBit; a shift by 64 is avoided for the full word.
            let width = lastBit - firstBit + 1
            let mask: UInt64 = width == 64 ? .max : ((1 << width) - 1) << firstBit
            spindle_atomic_or_u64(words + word, mask.littleEndian)
            page += width
        }
        return missed
    }

    /// Whether the bit of the page holding `gpa` is set (tests and diagnostics).
    public func isMarked(gpa: UInt64) -> Bool {
        let page = gpa >> Self.pageShift
        guard page < UInt64(wordCount) << 6 else { return false }
        let word = UInt64(littleEndian: spindle_atomic_load_u64(words + Int(page >> 6)))
        return word & (1 << (page & 63)) != 0
    }
}

/// What one running queue marks: the log (nil: logging is off, the usual case, which costs
/// the data path one load and branch) and, when SET_VRING_ADDR had VHOST_VRING_F_LOG, the
/// guest-physical address its used ring is logged at (`log_guest_addr`).
public struct VirtqueueDirtyLog: Sendable, Equatable {
    public var bitmap: DirtyLogBitmap?
    public var usedRingGuestAddress: UInt64?

    public static let off = VirtqueueDirtyLog(bitmap: nil, usedRingGuestAddress: nil)

    public init(bitmap: DirtyLogBitmap?, usedRingGuestAddress: UInt64?) {
        self.bitmap = bitmap
        self.usedRingGuestAddress = usedRingGuestAddress
    }
}
