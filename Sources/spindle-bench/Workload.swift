import VhostUserFrontend

/// --rw: the access pattern.
enum AccessPattern: String, Sendable, CaseIterable {
    case read, write, randread, randwrite, randrw
    /// Sequential discards / write-zeroes of one block each (data checks, not speed).
    case discard, writeZeroes = "write-zeroes"

    var isRandom: Bool { self == .randread || self == .randwrite || self == .randrw }
}

/// Picks each request's type and offset: random (xorshift64*, block-aligned, uniform over
/// the range) or sequential (wrapping). A plain value per thread; no allocation.
struct WorkloadGenerator: Sendable {
    let pattern: AccessPattern
    /// Percentage of reads (0-100), from the pattern or --rwmixread.
    let readPercent: UInt64
    /// Blocks of `blockSize` in the addressed range.
    let blockCount: UInt64
    let sectorsPerBlock: UInt64
    private var state: UInt64
    private var nextSequentialBlock: UInt64

    init(pattern: AccessPattern, readPercent: Int, blockCount: UInt64, blockSize: Int, seed: UInt64, startBlock: UInt64) {
        self.pattern = pattern
        switch pattern {
        case .read, .randread: self.readPercent = 100
        case .write, .randwrite, .discard, .writeZeroes: self.readPercent = 0
        case .randrw: self.readPercent = UInt64(max(0, min(100, readPercent)))
        }
        self.blockCount = max(1, blockCount)
        self.sectorsPerBlock = UInt64(blockSize / 512)
        state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed
        nextSequentialBlock = startBlock % max(1, blockCount)
    }

    @inline(__always)
    private mutating func random() -> UInt64 {
        state ^= state >> 12
        state ^= state << 25
        state ^= state >> 27
        return state &* 0x2545_F491_4F6C_DD1D
    }

    /// The next request: its type and first sector.
    @inline(__always)
    mutating func next() -> (type: BlkRequestType, sector: UInt64) {
        let type: BlkRequestType
        switch readPercent {
        case 100: type = .read
        case 0: type = .write
        default: type = random() % 100 < readPercent ? .read : .write
        }
        let special: BlkRequestType? = pattern == .discard ? .discard : pattern == .writeZeroes ? .writeZeroes : nil
        let block: UInt64
        if pattern.isRandom {
            // Multiply-shift maps 64 random bits onto [0, blockCount) without division.
            block = UInt64((random().multipliedFullWidth(by: blockCount)).high)
        } else {
            block = nextSequentialBlock
            nextSequentialBlock += 1
            if nextSequentialBlock == blockCount { nextSequentialBlock = 0 }
        }
        return (special ?? type, block &* sectorsPerBlock)
    }
}
