import CSpindle
import Glibc

/// Which parts of an image changed, one bit per `granularity` bytes. Any IOThread marks bits
/// (atomic OR, no allocation, no lock); one copier (a mirror job's thread) takes runs of
/// dirty bits, clearing them before it copies, so a write that lands after the clear sets
/// them again and the region is copied once more.
public final class DirtyBitmap: @unchecked Sendable {
    public let granularity: UInt64
    public let bitCount: Int
    private let shift: UInt64
    private let wordCount: Int
    private let words: UnsafeMutablePointer<UInt64>

    /// `granularity` must be a power of two.
    public init(length: UInt64, granularity: UInt64) {
        precondition(granularity > 0 && granularity & (granularity - 1) == 0, "granularity must be a power of two")
        self.granularity = granularity
        shift = UInt64(granularity.trailingZeroBitCount)
        bitCount = Int((length + granularity - 1) >> shift)
        wordCount = max(1, (bitCount + 63) / 64)
        words = .allocate(capacity: wordCount)
        words.initialize(repeating: 0, count: wordCount)
    }

    deinit { words.deallocate() }

    /// Marks every byte of [offset, offset + length) dirty (clipped to the bitmap).
    @inline(__always)
    public func markDirty(offset: UInt64, length: UInt64) {
        guard length > 0 else { return }
        let first = Int(min(offset >> shift, UInt64(bitCount)))
        let (end, overflow) = offset.addingReportingOverflow(length - 1)
        let last = Int(min((overflow ? UInt64.max : end) >> shift, UInt64(bitCount) - 1))
        guard first <= last, first < bitCount else { return }
        setBits(first, last)
    }

    public func markAll() {
        guard bitCount > 0 else { return }
        setBits(0, bitCount - 1)
    }

    private func setBits(_ first: Int, _ last: Int) {
        var bit = first
        while bit <= last {
            let word = bit / 64
            let low = bit % 64
            let high = min(63, last - word * 64)
            let mask = high == 63 ? ~UInt64(0) << low : ((UInt64(1) << (high + 1)) - 1) & ~((UInt64(1) << low) - 1)
            spindle_atomic_or_u64(words + word, mask)
            bit = word * 64 + 64
        }
    }

    /// Number of dirty bits.
    public var dirtyCount: Int {
        var count = 0
        for index in 0..<wordCount { count += spindle_atomic_load_u64(words + index).nonzeroBitCount }
        return count
    }

    /// Finds the first dirty bit at or after `cursor` (wrapping around), clears it and up to
    /// `maxBits - 1` dirty bits right after it, and returns the run; nil when all is clean.
    /// Only one thread (the copier) may take runs.
    public func takeRun(from cursor: Int, maxBits: Int) -> (first: Int, count: Int)? {
        guard bitCount > 0 else { return nil }
        let start = cursor % bitCount
        guard let first = findSet(from: start, to: bitCount) ?? findSet(from: 0, to: start) else { return nil }
        var count = 0
        while count < maxBits, first + count < bitCount, isSet(first + count) {
            let bit = first + count
            spindle_atomic_and_u64(words + bit / 64, ~(UInt64(1) << (bit % 64)))
            count += 1
        }
        return (first, count)
    }

    @inline(__always)
    private func isSet(_ bit: Int) -> Bool {
        spindle_atomic_load_u64(words + bit / 64) & (UInt64(1) << (bit % 64)) != 0
    }

    private func findSet(from: Int, to end: Int) -> Int? {
        var bit = from
        while bit < end {
            let word = spindle_atomic_load_u64(words + bit / 64) >> (bit % 64)
            if word != 0 {
                let found = bit + word.trailingZeroBitCount
                return found < end ? found : nil
            }
            bit = (bit / 64 + 1) * 64
        }
        return nil
    }
}
