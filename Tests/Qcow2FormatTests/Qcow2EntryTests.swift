import Testing
@testable import Qcow2Format

/// L1, L2 and refcount entry decoding, every rule and every refcount width.
struct Qcow2EntryTests {
    let bits: UInt32 = 16  // 64 KiB clusters

    @Test func decodesStandardL2Entries() {
        #expect(Qcow2Entries.decodeL2(0, clusterBits: bits) == .unallocated)
        #expect(Qcow2Entries.decodeL2(1, clusterBits: bits) == .zero)
        #expect(Qcow2Entries.decodeL2(0x3_0000 | 1, clusterBits: bits) == .zero)  // preallocated zero
        #expect(Qcow2Entries.decodeL2(1 << 63 | 0x5_0000, clusterBits: bits) == .data(hostOffset: 0x5_0000, copied: true))
        #expect(Qcow2Entries.decodeL2(0x5_0000, clusterBits: bits) == .data(hostOffset: 0x5_0000, copied: false))
    }

    @Test func flagsCorruptL2Entries() {
        #expect(Qcow2Entries.decodeL2(0x5_0000 | 1 << 4, clusterBits: bits) == .corrupt(.reservedBitsSet))
        #expect(Qcow2Entries.decodeL2(0x5_0000 | 1 << 57, clusterBits: bits) == .corrupt(.reservedBitsSet))
        #expect(Qcow2Entries.decodeL2(0x5_0200, clusterBits: bits) == .corrupt(.unalignedOffset))
        // 512-byte clusters: 0x200 is cluster 1, the first one after the header.
        #expect(Qcow2Entries.decodeL2(0x200, clusterBits: 9) == .data(hostOffset: 0x200, copied: false))
    }

    @Test func flagsL2EntriesPointingAtTheHeaderOrTheTables() {
        // Refcount table at 64 KiB, L1 at 128 KiB, 1 MiB file.
        let layout = Qcow2Layout(clusterBits: bits, virtualSize: 1 << 30, fileLength: 1 << 20, l1Offset: 0x2_0000,
                                 l1Size: 2, refcountTableOffset: 0x1_0000, refcountTableBytes: 0x1_0000)
        #expect(layout.check(.data(hostOffset: 0x1_0000, copied: true)) == .corrupt(.pointsIntoMetadata))
        #expect(layout.check(.data(hostOffset: 0x2_0000, copied: true)) == .corrupt(.pointsIntoMetadata))
        #expect(layout.check(.data(hostOffset: 0x3_0000, copied: true)) == .data(hostOffset: 0x3_0000, copied: true))
        #expect(layout.check(.compressed(hostOffset: 0x2_0008, byteCount: 512)) == .corrupt(.pointsIntoMetadata))
        #expect(layout.check(.compressed(hostOffset: 1 << 21, byteCount: 512)) == .corrupt(.pastEndOfFile))
        #expect(layout.checkL2Table(0) == .pointsIntoHeader)
        #expect(layout.checkL2Table(0x2_0000) == .pointsIntoMetadata)
        #expect(layout.checkL2Table(1 << 20) == .pastEndOfFile)
        #expect(layout.checkL2Table(0x3_0000) == nil)
    }

    @Test(arguments: [9, 12, 16, 21] as [UInt32])
    func decodesCompressedDescriptorsForEveryClusterSize(clusterBits: UInt32) {
        let offsetBits = 62 - (UInt64(clusterBits) - 8)
        let host: UInt64 = (1 << UInt64(clusterBits)) * 3 + 0x123
        let sectors: UInt64 = clusterBits == 9 ? 1 : 2  // the field is cluster_bits - 8 bits wide
        let raw = 1 << 62 | sectors << offsetBits | host
        #expect(Qcow2Entries.decodeL2(raw, clusterBits: clusterBits) == .compressed(hostOffset: host, byteCount: (sectors + 1) * 512 - 0x123))
        // The sector count never spills into the offset, whatever the width.
        let maxSectors = (UInt64(1) << (UInt64(clusterBits) - 8)) - 1
        let widest = 1 << 62 | maxSectors << offsetBits | host
        #expect(Qcow2Entries.decodeL2(widest, clusterBits: clusterBits) == .compressed(hostOffset: host, byteCount: (maxSectors + 1) * 512 - 0x123))
        #expect(Qcow2Entries.decodeL2(1 << 62 | 0x10, clusterBits: clusterBits) == .corrupt(.pointsIntoHeader))
    }

    @Test func decodesL1AndRefcountTableEntries() {
        #expect(Qcow2Entries.l2TableOffset(l1Entry: 0, clusterBits: bits) == 0)
        #expect(Qcow2Entries.l2TableOffset(l1Entry: 1 << 63 | 0x7_0000, clusterBits: bits) == 0x7_0000)
        #expect(Qcow2Entries.l2TableOffset(l1Entry: 1 << 62 | 0x7_0000, clusterBits: bits) == nil)
        #expect(Qcow2Entries.l2TableOffset(l1Entry: 0x7_0001, clusterBits: bits) == nil)
        #expect(Qcow2Entries.l2TableOffset(l1Entry: 0x7_0200, clusterBits: bits) == nil)
        #expect(Qcow2Entries.refcountBlockOffset(0x4_0000, clusterBits: bits) == 0x4_0000)
        #expect(Qcow2Entries.refcountBlockOffset(0x4_0001, clusterBits: bits) == nil)
    }

    @Test(arguments: 0...6 as ClosedRange<UInt32>)
    func decodesRefcountsOfEveryWidth(order: UInt32) {
        let width = 1 << Int(order)
        let block = [UInt8](repeating: 0, count: 64)
        var bytes = block
        let count = bytes.count * 8 / width
        let mask: UInt64 = width == 64 ? .max : (1 << UInt64(width)) - 1
        // Entry i holds (i * 0x9E37_79B9_7F4A_7C15) masked to the width.
        func value(_ i: Int) -> UInt64 { (UInt64(i) &* 0x9E37_79B9_7F4A_7C15) & mask }
        for i in 0..<count {
            if width < 8 {
                let perByte = 8 / width
                bytes[i / perByte] |= UInt8(value(i)) << UInt8((i % perByte) * width)
            } else {
                for b in 0..<(width / 8) { bytes[i * width / 8 + b] = UInt8(truncatingIfNeeded: value(i) >> UInt64(width - 8 * (b + 1))) }
            }
        }
        bytes.withUnsafeBytes { buffer in
            for i in 0..<count { #expect(Qcow2Entries.refcount(in: buffer, index: i, order: order) == value(i)) }
            #expect(Qcow2Entries.refcount(in: buffer, index: count, order: order) == nil)
            #expect(Qcow2Entries.refcount(in: buffer, index: -1, order: order) == nil)
        }
    }

    @Test func readsQemuImgsOneBitAndSixteenBitLayouts() {
        // refcount_bits=1: cluster 0 is bit 0 of byte 0; 16 bits: big-endian.
        [UInt8]([0b0000_0101, 0]).withUnsafeBytes { buffer in
            #expect(Qcow2Entries.refcount(in: buffer, index: 0, order: 0) == 1)
            #expect(Qcow2Entries.refcount(in: buffer, index: 1, order: 0) == 0)
            #expect(Qcow2Entries.refcount(in: buffer, index: 2, order: 0) == 1)
        }
        [UInt8]([0x01, 0x02]).withUnsafeBytes { buffer in
            #expect(Qcow2Entries.refcount(in: buffer, index: 0, order: 4) == 0x0102)
        }
    }
}
