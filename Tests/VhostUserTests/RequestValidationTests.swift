import Glibc
import Testing
@testable import VhostUser

@Suite struct RequestValidationTests {
    static let region = RequestRoundTripTests.region

    @Test func wrongFixedSizesAreRejectedWithTheRequestName() {
        #expect(decodeError(rawMessage(.setVringAddr, payload: [UInt8](repeating: 0, count: 20)))
                == "SET_VRING_ADDR: payload is 20 bytes, expected 40")
        #expect(decodeError(rawMessage(.setVringAddr, payload: [UInt8](repeating: 0, count: 48)))
                == "SET_VRING_ADDR: payload is 48 bytes, expected 40")
        #expect(decodeError(rawMessage(.setFeatures, payload: [1, 2, 3, 4]))
                == "SET_FEATURES: payload is 4 bytes, expected 8")
        #expect(decodeError(rawMessage(.setVringNum, payload: [UInt8](repeating: 0, count: 12)))
                == "SET_VRING_NUM: payload is 12 bytes, expected 8")
        #expect(decodeError(rawMessage(.getFeatures, payload: le(UInt64(0))))
                == "GET_FEATURES: payload is 8 bytes, expected none")
        #expect(decodeError(rawMessage(.getInflightFD, payload: [UInt8](repeating: 0, count: 20)))
                == "GET_INFLIGHT_FD: payload is 20 bytes, expected 24")
        #expect(decodeError(rawMessage(.addMemReg, payload: [UInt8](repeating: 0, count: 32), fds: []))
                == "ADD_MEM_REG: payload is 32 bytes, expected 40")
        #expect(decodeError(rawMessage(.setLogBase, payload: le(UInt64(0)))) == "SET_LOG_BASE: payload is 8 bytes, expected 16")
        #expect(decodeError(rawMessage(.setVringKick, payload: [0, 1])) == "SET_VRING_KICK: payload is 2 bytes, expected 8")
        #expect(decodeError(rawMessage(.setBackendReqFD, payload: le(UInt64(0)))) == "SET_BACKEND_REQ_FD: payload is 8 bytes, expected none")
    }

    @Test func everyFixedSizeRequestRejectsEveryOtherSize() {
        let fixed: [(VhostUserRequestCode, Int)] = [
            (.getFeatures, 0), (.setFeatures, 8), (.setOwner, 0), (.resetOwner, 0), (.setVringNum, 8),
            (.setVringAddr, 40), (.setVringBase, 8), (.getVringBase, 8), (.getProtocolFeatures, 0),
            (.setProtocolFeatures, 8), (.getQueueNum, 0), (.setVringEnable, 8), (.setVringEndian, 8),
            (.getInflightFD, 24), (.resetDevice, 0), (.vringKick, 8), (.getMaxMemSlots, 0),
            (.remMemReg, 40), (.setStatus, 8), (.getStatus, 0),
        ]
        for (code, size) in fixed {
            for wrong in [0, 1, 4, 7, 8, 9, 16, 20, 24, 32, 39, 40, 41, 64] where wrong != size {
                let error = decodeError(rawMessage(code, payload: [UInt8](repeating: 0, count: wrong)))
                #expect(error?.hasPrefix("\(code.name): payload is \(wrong) bytes") == true, "\(code) \(wrong): \(error ?? "")")
            }
        }
    }

    @Test func headerSizeMustMatchThePayload() {
        let message = rawMessage(VhostUserRequestCode.setFeatures.rawValue, payload: le(UInt64(1)), size: 16)
        #expect(decodeError(message) == "SET_FEATURES: header says 16 payload bytes but 8 arrived")
    }

    @Test func versionMustBeOne() {
        #expect(decodeError(rawMessage(.getFeatures, flags: 0))
                == "GET_FEATURES: unsupported protocol version 0 (flags 0x0), expected 1")
        #expect(decodeError(rawMessage(.getFeatures, flags: 0x6))?.contains("version 2") == true)
    }

    @Test func vringFDMustBePresentExactlyWhenNoFDFlagIsClear() {
        #expect(decodeError(rawMessage(.setVringCall, payload: le(UInt64(2))))
                == "SET_VRING_CALL: ring 2: no file descriptor arrived and the no-fd flag is clear")
        let probe = FDClosureProbe()
        let withNoFDFlag = rawMessage(.setVringKick, payload: le(UInt64(0x101)), fds: [probe.makeFD()])
        let twoFDs = rawMessage(.setVringErr, payload: le(UInt64(0)), fds: [probe.makeFD(), probe.makeFD()])
        probe.releaseOriginal()
        #expect(decodeError(withNoFDFlag)
                == "SET_VRING_KICK: ring 1: the no-fd flag is set but 1 file descriptor arrived")
        #expect(decodeError(twoFDs) == "SET_VRING_ERR: 2 file descriptors arrived, expected 1")
        #expect(probe.allClosed)
    }

    @Test func memoryTableRegionCountIsChecked() {
        func table(_ count: UInt32, regions: Int) -> [UInt8] {
            le(count) + le(UInt32(0)) + [UInt8](repeating: 0, count: regions * 32)
        }
        #expect(decodeError(rawMessage(.setMemTable, payload: table(9, regions: 8), fds: []))
                == "SET_MEM_TABLE: the memory table has 9 regions, at most 8 are allowed")
        #expect(decodeError(rawMessage(.setMemTable, payload: table(0xffff_ffff, regions: 0)))
                == "SET_MEM_TABLE: the memory table has 4294967295 regions, at most 8 are allowed")
        #expect(decodeError(rawMessage(.setMemTable, payload: table(0, regions: 0)))
                == "SET_MEM_TABLE: the memory table has no regions")
        #expect(decodeError(rawMessage(.setMemTable, payload: [1, 0, 0]))
                == "SET_MEM_TABLE: payload is 3 bytes, too short for the region count (needs 8)")
        #expect(decodeError(rawMessage(.setMemTable, payload: table(2, regions: 1), fds: [-1, -1]))
                == "SET_MEM_TABLE: payload is 40 bytes, too short for 2 regions (needs 72)")
        #expect(decodeError(rawMessage(.setMemTable, payload: table(1, regions: 9)))
                == "SET_MEM_TABLE: payload is 296 bytes, more than the largest memory table (264)")
    }

    @Test func memoryTableNeedsOneFDPerRegionAndClosesThemOnError() {
        let probe = FDClosureProbe()
        let payload = le(UInt32(2)) + le(UInt32(0)) + [UInt8](repeating: 0, count: 64)
        let tooFew = rawMessage(.setMemTable, payload: payload, fds: [probe.makeFD()])
        let tooMany = rawMessage(.setMemTable, payload: payload, fds: [probe.makeFD(), probe.makeFD(), probe.makeFD()])
        probe.releaseOriginal()
        #expect(decodeError(tooFew)
                == "SET_MEM_TABLE: 2 regions but 1 file descriptor; one per region is required")
        #expect(decodeError(tooMany)
                == "SET_MEM_TABLE: 2 regions but 3 file descriptors; one per region is required")
        #expect(probe.allClosed)
    }

    @Test func requestsWithOneFDRejectMissingOrExtraFDs() {
        let probe = FDClosureProbe()
        let single = VhostUserRequest.addMemReg(VhostUserMemoryRegionFD(region: Self.region, fd: 0)).message().payload
        let inflight = [UInt8](repeating: 0, count: 24)
        #expect(decodeError(rawMessage(.addMemReg, payload: single)) == "ADD_MEM_REG: 0 file descriptors arrived, expected 1")
        #expect(decodeError(rawMessage(.setBackendReqFD)) == "SET_BACKEND_REQ_FD: 0 file descriptors arrived, expected 1")
        #expect(decodeError(rawMessage(.setInflightFD, payload: inflight)) == "SET_INFLIGHT_FD: 0 file descriptors arrived, expected 1")
        #expect(decodeError(rawMessage(.setLogFD)) == "SET_LOG_FD: 0 file descriptors arrived, expected 1")
        let extra = [
            rawMessage(.addMemReg, payload: single, fds: [probe.makeFD(), probe.makeFD()]),
            rawMessage(.setBackendReqFD, fds: [probe.makeFD(), probe.makeFD()]),
            rawMessage(.setInflightFD, payload: inflight, fds: [probe.makeFD(), probe.makeFD()]),
            rawMessage(.remMemReg, payload: single, fds: [probe.makeFD(), probe.makeFD()]),
            rawMessage(.setLogBase, payload: [UInt8](repeating: 0, count: 16), fds: [probe.makeFD(), probe.makeFD()]),
        ]
        probe.releaseOriginal()
        for message in extra {
            #expect(decodeError(message)?.contains("2 file descriptors arrived, expected") == true)
        }
        #expect(probe.allClosed)
    }

    @Test func requestsWithoutFDsRejectAndCloseExtraFDs() {
        let probe = FDClosureProbe()
        let messages = [
            rawMessage(.getFeatures, fds: [probe.makeFD()]),
            rawMessage(.setFeatures, payload: le(UInt64(0)), fds: [probe.makeFD()]),
            rawMessage(.setVringNum, payload: le(UInt64(0)), fds: [probe.makeFD()]),
            rawMessage(.setVringAddr, payload: [UInt8](repeating: 0, count: 40), fds: [probe.makeFD()]),
            rawMessage(.getConfig, payload: [UInt8](repeating: 0, count: 12), fds: [probe.makeFD()]),
            rawMessage(.getInflightFD, payload: [UInt8](repeating: 0, count: 24), fds: [probe.makeFD()]),
        ]
        probe.releaseOriginal()
        for message in messages {
            #expect(decodeError(message)?.hasSuffix("1 file descriptor arrived, expected none") == true)
        }
        #expect(probe.allClosed)
    }

    @Test func sizeErrorsCloseFDsToo() {
        let probe = FDClosureProbe()
        let message = rawMessage(.addMemReg, payload: [1, 2, 3], fds: [probe.makeFD()])
        probe.releaseOriginal()
        #expect(decodeError(message) == "ADD_MEM_REG: payload is 3 bytes, expected 40")
        #expect(probe.allClosed)
    }

    @Test func configSizesAreChecked() {
        let header = { (size: UInt32) in le(UInt32(0)) + le(size) + le(UInt32(0)) }
        #expect(decodeError(rawMessage(.getConfig, payload: [0, 0, 0, 0]))
                == "GET_CONFIG: payload is 4 bytes, too short for the config header (needs 12)")
        #expect(decodeError(rawMessage(.setConfig, payload: header(257) + [UInt8](repeating: 0, count: 257)))
                == "SET_CONFIG: config size is 257 bytes, at most 256 are allowed")
        #expect(decodeError(rawMessage(.setConfig, payload: header(8) + [1, 2, 3]))
                == "SET_CONFIG: payload is 15 bytes, expected 20 for 8 bytes of config")
        #expect(decodeError(rawMessage(.getConfig, payload: header(2) + [1, 2, 3]))
                == "GET_CONFIG: payload is 15 bytes, expected 14 for 2 bytes of config")
    }

    @Test func arbitraryBytesNeverCrashTheDecoder() {
        // A cheap fuzz: every code, many sizes, pseudo-random contents.
        var state: UInt64 = 0x9e37_79b9_7f4a_7c15
        func next() -> UInt8 {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return UInt8(truncatingIfNeeded: state >> 33)
        }
        for code in UInt32(0)...50 {
            for size in [0, 1, 7, 8, 12, 16, 20, 24, 40, 72, 264, 268, 300] {
                let payload = (0..<size).map { _ in next() }
                _ = try? VhostUserRequest.decode(rawMessage(code, payload: payload))
                _ = try? VhostUserRequest.decode(rawMessage(code, flags: UInt32(next()), payload: payload))
            }
        }
    }
}
