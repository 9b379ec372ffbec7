import Testing
@testable import VirtioBlk

@Suite struct VirtioBlkConfigTests {
    func sample() -> VirtioBlkConfig {
        var c = VirtioBlkConfig()
        c.capacity = 0x0102_0304_0506_0708
        c.sizeMax = 0x1111_2222
        c.segMax = 126
        c.geometry = .init(cylinders: 0x3344, heads: 0x55, sectors: 0x66)
        c.blockSize = 4096
        c.topology = .init(physicalBlockExponent: 3, alignmentOffset: 1, minIOSize: 0x7788, optIOSize: 0x99AA_BBCC)
        c.writeback = 1
        c.numQueues = 4
        c.maxDiscardSectors = 0xDD
        c.maxDiscardSegments = 0xEE
        c.discardSectorAlignment = 8
        c.maxWriteZeroesSectors = 0xF0
        c.maxWriteZeroesSegments = 0xF1
        c.writeZeroesMayUnmap = 1
        return c
    }

    func field(_ bytes: [UInt8], _ offset: Int, _ size: Int) -> UInt64 {
        (0..<size).reduce(UInt64(0)) { $0 | UInt64(bytes[offset + $1]) << (8 * UInt64($1)) }
    }

    @Test func specOffsets() {
        let b = sample().bytes()
        #expect(b.count == 96)
        #expect(field(b, 0, 8) == 0x0102_0304_0506_0708)
        #expect(b[0] == 0x08)  // little-endian
        #expect(field(b, 8, 4) == 0x1111_2222)
        #expect(field(b, 12, 4) == 126)
        #expect(field(b, 16, 2) == 0x3344)
        #expect(b[18] == 0x55)
        #expect(b[19] == 0x66)
        #expect(field(b, 20, 4) == 4096)
        #expect(b[24] == 3)
        #expect(b[25] == 1)
        #expect(field(b, 26, 2) == 0x7788)
        #expect(field(b, 28, 4) == 0x99AA_BBCC)
        #expect(b[32] == 1)
        #expect(b[33] == 0)
        #expect(field(b, 34, 2) == 4)
        #expect(field(b, 36, 4) == 0xDD)
        #expect(field(b, 40, 4) == 0xEE)
        #expect(field(b, 44, 4) == 8)
        #expect(field(b, 48, 4) == 0xF0)
        #expect(field(b, 52, 4) == 0xF1)
        #expect(b[56] == 1)
        #expect(b[57..<96].allSatisfy { $0 == 0 })
    }

    @Test func boundedReads() {
        let c = sample()
        #expect(c.read(offset: 0, size: 60) == Array(c.bytes()[0..<60]))
        #expect(c.read(offset: 34, size: 2) == [4, 0])
        #expect(c.read(offset: 250, size: 6) == [0, 0, 0, 0, 0, 0])
        #expect(c.read(offset: 250, size: 7) == nil)
        #expect(c.read(offset: UInt32.max, size: 2) == nil)
        #expect(c.read(offset: 0, size: UInt32.max) == nil)
        #expect(c.read(offset: 10, size: 0) == [])
    }

    @Test func writebackIsTheOnlyWritableByte() throws {
        var c = sample()
        try c.applyWrite(offset: 32, bytes: [0], configWCENegotiated: true)
        #expect(c.writeback == 0)
        #expect(throws: VirtioBlkConfigWriteError.writebackNotNegotiated) {
            try c.applyWrite(offset: 32, bytes: [1], configWCENegotiated: false)
        }
        #expect(throws: VirtioBlkConfigWriteError.invalidWriteback(7)) {
            try c.applyWrite(offset: 32, bytes: [7], configWCENegotiated: true)
        }
        #expect(throws: VirtioBlkConfigWriteError.readOnlyField(offset: 0)) {
            try c.applyWrite(offset: 0, bytes: [0xFF], configWCENegotiated: true)
        }
        // Rewriting a whole range with unchanged values plus a new writeback is fine.
        var range = c.read(offset: 30, size: 6)!
        range[2] = 1
        try c.applyWrite(offset: 30, bytes: range, configWCENegotiated: true)
        #expect(c.writeback == 1)
        #expect(throws: VirtioBlkConfigWriteError.outOfRange(offset: 255, size: 2)) {
            try c.applyWrite(offset: 255, bytes: [0, 0], configWCENegotiated: true)
        }
        #expect(throws: VirtioBlkConfigWriteError.self) {
            try c.applyWrite(offset: UInt32.max, bytes: [0], configWCENegotiated: true)
        }
        #expect(c == { var s = sample(); s.writeback = 1; return s }())
    }
}
