#if canImport(Glibc)
import Glibc
#endif
import SpindleTestSupport
import Testing
import VhostUser
@testable import VirtioBlk

@Suite struct VirtioBlkRequestTests {
    let parser = VirtioBlkRequestParser(capacitySectors: 64,
                                        discardEnabled: true, maxDiscardSectors: 32, maxDiscardSegments: 4,
                                        writeZeroesEnabled: true, maxWriteZeroesSectors: 32, maxWriteZeroesSegments: 2)
    let buffers = VirtioBlkRequestBuffers(dataSpanCapacity: 16, segmentCapacity: 8)

    @Test func linuxLayoutRead() throws {
        let guest = MockSplitQueue.flat(size: 64)
        guest.write(header(VirtioBlkRequestType.read, sector: 8), at: 0x10000)
        let chain = try guest.chain([(0x10000, 16, false), (0x20000, 1024, true), (0x30000, 1, true)])
        let request = try parser.parse(chain, into: buffers)
        #expect(request.operation == .read(sector: 8))
        #expect(request.dataLength == 1024)
        #expect(request.dataSpans.count == 1)
        #expect(request.dataSpans[0].iov_base == guest.host(0x20000))
        #expect(request.dataSpans[0].iov_len == 1024)
        #expect(UnsafeMutableRawPointer(request.statusByte) == guest.host(0x30000))
        guest.write([0xFF], at: 0x30000)
        request.complete(.ok)
        #expect(guest.read(1, at: 0x30000) == [0])
        #expect(request.usedLength(for: .ok) == 1025)
        #expect(request.usedLength(for: .ioError) == 1)
    }

    @Test func anyLayoutWriteWithHeaderAndDataMerged() throws {
        let guest = MockSplitQueue.flat(size: 64)
        // Header split over two descriptors, the second also carrying the data.
        guest.write(header(VirtioBlkRequestType.write, sector: 2), at: 0x10000 - 8)
        let full = header(VirtioBlkRequestType.write, sector: 2)
        guest.write(Array(full[0..<8]), at: 0x10000)
        guest.write(Array(full[8..<16]), at: 0x20000)
        let chain = try guest.chain([(0x10000, 8, false), (0x20000, 8 + 1024, false), (0x30000, 1, true)])
        let request = try parser.parse(chain, into: buffers)
        #expect(request.operation == .write(sector: 2))
        #expect(request.dataLength == 1024)
        #expect(request.dataSpans.count == 1)
        #expect(request.dataSpans[0].iov_base == guest.host(0x20008))
        #expect(request.dataSpans[0].iov_len == 1024)
        #expect(request.usedLength(for: .ok) == 1)
    }

    @Test func anyLayoutReadWithDataAndStatusMerged() throws {
        let guest = MockSplitQueue.flat(size: 64)
        guest.write(header(VirtioBlkRequestType.read, sector: 0), at: 0x10000)
        let chain = try guest.chain([(0x10000, 16, false), (0x20000, 100, true), (0x30000, 413, true)])
        let request = try parser.parse(chain, into: buffers)
        #expect(request.operation == .read(sector: 0))
        #expect(request.dataSpans.map(\.iov_len) == [100, 412])
        #expect(request.dataSpans[1].iov_base == guest.host(0x30000))
        #expect(UnsafeMutableRawPointer(request.statusByte) == guest.host(0x30000 + 412))
    }

    @Test func headerTooShort() throws {
        let guest = MockSplitQueue.flat(size: 64)
        let chain = try guest.chain([(0x10000, 8, false), (0x30000, 1, true)])
        let request = try parser.parse(chain, into: buffers)
        #expect(request.operation == .reject(.headerTooShort(readableLength: 8)))
        guard case .reject(let problem) = request.operation else { return }
        #expect(problem.status == .ioError)
        request.complete(problem.status)
        #expect(guest.read(1, at: 0x30000) == [1])
    }

    @Test func noWritableStatusCannotComplete() throws {
        let guest = MockSplitQueue.flat(size: 64)
        guest.write(header(VirtioBlkRequestType.flush), at: 0x10000)
        // The "status" descriptor is device-readable: nothing can be written back.
        let chain = try guest.chain([(0x10000, 16, false), (0x30000, 1, false)])
        #expect(throws: VirtioBlkRequestError.cannotComplete(head: 0)) { try parser.parse(chain, into: buffers) }
    }

    @Test func unalignedAndOutOfRange() throws {
        let guest = MockSplitQueue.flat(size: 64)
        guest.write(header(VirtioBlkRequestType.write, sector: 0), at: 0x10000)
        var chain = try guest.chain([(0x10000, 16 + 100, false), (0x30000, 1, true)])
        #expect(try parser.parse(chain, into: buffers).operation == .reject(.unalignedLength(100)))

        // Ends exactly at the disk's end: fine. One sector more: not.
        guest.write(header(VirtioBlkRequestType.read, sector: 62), at: 0x10000)
        chain = try guest.chain([(0x10000, 16, false), (0x20000, 1024, true), (0x30000, 1, true)])
        #expect(try parser.parse(chain, into: buffers).operation == .read(sector: 62))
        guest.write(header(VirtioBlkRequestType.read, sector: 63), at: 0x10000)
        chain = try guest.chain([(0x10000, 16, false), (0x20000, 1024, true), (0x30000, 1, true)])
        #expect(try parser.parse(chain, into: buffers).operation == .reject(.outOfRange(sector: 63, length: 1024)))
        // Sector arithmetic that would overflow.
        guest.write(header(VirtioBlkRequestType.read, sector: UInt64.max), at: 0x10000)
        chain = try guest.chain([(0x10000, 16, false), (0x20000, 1024, true), (0x30000, 1, true)])
        #expect(try parser.parse(chain, into: buffers).operation == .reject(.outOfRange(sector: UInt64.max, length: 1024)))
        guest.write(header(VirtioBlkRequestType.write, sector: UInt64.max / 512), at: 0x10000)
        chain = try guest.chain([(0x10000, 16 + 512, false), (0x30000, 1, true)])
        #expect(try parser.parse(chain, into: buffers).operation == .reject(.outOfRange(sector: UInt64.max / 512, length: 512)))
    }

    @Test func readOnlyAndUnsupported() throws {
        let guest = MockSplitQueue.flat(size: 64)
        let readOnly = VirtioBlkRequestParser(capacitySectors: 64, readOnly: true)
        guest.write(header(VirtioBlkRequestType.write, sector: 0), at: 0x10000)
        var chain = try guest.chain([(0x10000, 16 + 512, false), (0x30000, 1, true)])
        #expect(try readOnly.parse(chain, into: buffers).operation == .reject(.readOnly))

        for type in [VirtioBlkRequestType.getLifetime, VirtioBlkRequestType.secureErase, 99] {
            guest.write(header(type), at: 0x10000)
            chain = try guest.chain([(0x10000, 16, false), (0x30000, 64, true)])
            let request = try parser.parse(chain, into: buffers)
            #expect(request.operation == .reject(.unsupportedType(type)))
            #expect(request.type == type)
        }
        guest.write(header(VirtioBlkRequestType.discard), at: 0x10000)
        guest.write(segment(0, 1), at: 0x10010)
        chain = try guest.chain([(0x10000, 32, false), (0x30000, 1, true)])
        #expect(try readOnly.parse(chain, into: buffers).operation == .reject(.featureNotNegotiated(type: VirtioBlkRequestType.discard)))
        guard case .reject(let problem) = try readOnly.parse(chain, into: buffers).operation else { return }
        #expect(problem.status == .unsupported)
    }

    @Test func flushAndGetId() throws {
        let guest = MockSplitQueue.flat(size: 64)
        guest.write(header(VirtioBlkRequestType.flush), at: 0x10000)
        var chain = try guest.chain([(0x10000, 16, false), (0x30000, 1, true)])
        #expect(try parser.parse(chain, into: buffers).operation == .flush)

        guest.write(header(VirtioBlkRequestType.getId), at: 0x10000)
        guest.write([UInt8](repeating: 0xEE, count: 21), at: 0x20000)
        chain = try guest.chain([(0x10000, 16, false), (0x20000, 21, true)])
        var request = try parser.parse(chain, into: buffers)
        #expect(request.operation == .getId)
        let serial = Array("disk-0".utf8)
        let written = serial.withUnsafeBytes { request.writeDeviceId($0) }
        #expect(written == 20)
        #expect(guest.read(20, at: 0x20000) == serial + [UInt8](repeating: 0, count: 14))
        #expect(request.usedLength(for: .ok) == 21)

        // A driver buffer shorter than 20 bytes gets what fits.
        guest.write([UInt8](repeating: 0xEE, count: 9), at: 0x20000)
        chain = try guest.chain([(0x10000, 16, false), (0x20000, 4, true), (0x20004, 5, true)])
        request = try parser.parse(chain, into: buffers)
        let short = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ".utf8)
        #expect(short.withUnsafeBytes { request.writeDeviceId($0) } == 8)
        #expect(guest.read(9, at: 0x20000) == Array("ABCDEFGH".utf8) + [0xEE])
    }

    @Test func discardSegments() throws {
        let guest = MockSplitQueue.flat(size: 64)
        guest.write(header(VirtioBlkRequestType.discard), at: 0x10000)
        guest.write(segment(0, 8) + segment(56, 8), at: 0x10010)
        // Second segment split across descriptors.
        let chain = try guest.chain([(0x10000, 16 + 20, false), (0x10024, 12, false), (0x30000, 1, true)])
        let request = try parser.parse(chain, into: buffers)
        #expect(request.operation == .discard)
        #expect(Array(request.segments) == [VirtioBlkSegment(sector: 0, sectorCount: 8, flags: 0),
                                            VirtioBlkSegment(sector: 56, sectorCount: 8, flags: 0)])
    }

    func discardLike(_ type: UInt32, _ payload: [UInt8]) throws -> VirtioBlkOperation {
        let guest = MockSplitQueue.flat(size: 64)
        guest.write(header(type), at: 0x10000)
        guest.write(payload, at: 0x10010)
        let chain = try guest.chain([(0x10000, UInt32(16 + payload.count), false), (0x30000, 1, true)])
        return try parser.parse(chain, into: buffers).operation
    }

    @Test func discardAndWriteZeroesChecks() throws {
        let discard = VirtioBlkRequestType.discard
        let zeroes = VirtioBlkRequestType.writeZeroes
        #expect(try discardLike(discard, []) == .reject(.invalidSegmentPayload(length: 0)))
        #expect(try discardLike(discard, segment(0, 1) + [1, 2, 3, 4]) == .reject(.invalidSegmentPayload(length: 20)))
        #expect(try discardLike(discard, segment(0, 1, flags: 1)) == .reject(.unsupportedSegmentFlags(index: 0, flags: 1)))
        #expect(try discardLike(discard, segment(0, 33)) == .reject(.segmentTooLarge(index: 0, sectorCount: 33, maximum: 32)))
        #expect(try discardLike(discard, segment(0, 1) + segment(60, 8))
                == .reject(.segmentOutOfRange(index: 1, sector: 60, sectorCount: 8)))
        #expect(try discardLike(discard, segment(UInt64.max, 1))
                == .reject(.segmentOutOfRange(index: 0, sector: UInt64.max, sectorCount: 1)))
        let five = (0..<5).flatMap { segment(UInt64($0), 1) }
        #expect(try discardLike(discard, five) == .reject(.tooManySegments(count: 5, maximum: 4)))
        #expect(try discardLike(zeroes, segment(0, 8, flags: 1)) == .writeZeroes)
        #expect(try discardLike(zeroes, segment(0, 8, flags: 2)) == .reject(.unsupportedSegmentFlags(index: 0, flags: 2)))
        #expect(try discardLike(zeroes, segment(0, 1) + segment(1, 1) + segment(2, 1))
                == .reject(.tooManySegments(count: 3, maximum: 2)))
    }

    @Test func writeZeroesUnmapFlag() throws {
        let guest = MockSplitQueue.flat(size: 64)
        guest.write(header(VirtioBlkRequestType.writeZeroes), at: 0x10000)
        guest.write(segment(4, 8, flags: 1), at: 0x10010)
        let chain = try guest.chain([(0x10000, 32, false), (0x30000, 1, true)])
        let request = try parser.parse(chain, into: buffers)
        #expect(request.segments.count == 1)
        #expect(request.segments[0].unmap)
    }

    @Test func tooManyDataSpansForBuffers() throws {
        let guest = MockSplitQueue.flat(size: 64)
        guest.write(header(VirtioBlkRequestType.read), at: 0x10000)
        let chain = try guest.chain([(0x10000, 16, false), (0x20000, 512, true), (0x21000, 512, true), (0x30000, 1, true)])
        let small = VirtioBlkRequestBuffers(dataSpanCapacity: 1, segmentCapacity: 1)
        #expect(try parser.parse(chain, into: small).operation == .reject(.tooManyDataSpans))
    }

    @Test func parserFromConfigAndFeatures() {
        var config = VirtioBlkConfig()
        config.capacity = 2048
        config.maxDiscardSegments = 1
        config.maxDiscardSectors = 100
        let features = VirtioBlkFeature.mask(VirtioBlkFeature.readOnly) | VirtioBlkFeature.mask(VirtioBlkFeature.discard)
        let p = VirtioBlkRequestParser(config: config, negotiatedFeatures: features)
        #expect(p.capacitySectors == 2048)
        #expect(p.readOnly)
        #expect(p.discardEnabled)
        #expect(!p.writeZeroesEnabled)
        #expect(p.maxDiscardSectors == 100)
    }
}
