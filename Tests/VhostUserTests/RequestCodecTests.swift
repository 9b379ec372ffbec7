import Glibc
import Testing
@testable import VhostUser

@Suite struct SpecNumberTests {
    @Test func requestCodesMatchTheSpec() {
        let expected: [(VhostUserRequestCode, UInt32, String)] = [
            (.getFeatures, 1, "GET_FEATURES"), (.setFeatures, 2, "SET_FEATURES"),
            (.setOwner, 3, "SET_OWNER"), (.resetOwner, 4, "RESET_OWNER"),
            (.setMemTable, 5, "SET_MEM_TABLE"), (.setLogBase, 6, "SET_LOG_BASE"),
            (.setLogFD, 7, "SET_LOG_FD"), (.setVringNum, 8, "SET_VRING_NUM"),
            (.setVringAddr, 9, "SET_VRING_ADDR"), (.setVringBase, 10, "SET_VRING_BASE"),
            (.getVringBase, 11, "GET_VRING_BASE"), (.setVringKick, 12, "SET_VRING_KICK"),
            (.setVringCall, 13, "SET_VRING_CALL"), (.setVringErr, 14, "SET_VRING_ERR"),
            (.getProtocolFeatures, 15, "GET_PROTOCOL_FEATURES"),
            (.setProtocolFeatures, 16, "SET_PROTOCOL_FEATURES"), (.getQueueNum, 17, "GET_QUEUE_NUM"),
            (.setVringEnable, 18, "SET_VRING_ENABLE"), (.sendRARP, 19, "SEND_RARP"),
            (.netSetMTU, 20, "NET_SET_MTU"), (.setBackendReqFD, 21, "SET_BACKEND_REQ_FD"),
            (.iotlbMsg, 22, "IOTLB_MSG"), (.setVringEndian, 23, "SET_VRING_ENDIAN"),
            (.getConfig, 24, "GET_CONFIG"), (.setConfig, 25, "SET_CONFIG"),
            (.createCryptoSession, 26, "CREATE_CRYPTO_SESSION"),
            (.closeCryptoSession, 27, "CLOSE_CRYPTO_SESSION"), (.postcopyAdvise, 28, "POSTCOPY_ADVISE"),
            (.postcopyListen, 29, "POSTCOPY_LISTEN"), (.postcopyEnd, 30, "POSTCOPY_END"),
            (.getInflightFD, 31, "GET_INFLIGHT_FD"), (.setInflightFD, 32, "SET_INFLIGHT_FD"),
            (.gpuSetSocket, 33, "GPU_SET_SOCKET"), (.resetDevice, 34, "RESET_DEVICE"),
            (.vringKick, 35, "VRING_KICK"), (.getMaxMemSlots, 36, "GET_MAX_MEM_SLOTS"),
            (.addMemReg, 37, "ADD_MEM_REG"), (.remMemReg, 38, "REM_MEM_REG"),
            (.setStatus, 39, "SET_STATUS"), (.getStatus, 40, "GET_STATUS"),
            (.getSharedObject, 41, "GET_SHARED_OBJECT"), (.setDeviceStateFD, 42, "SET_DEVICE_STATE_FD"),
            (.checkDeviceState, 43, "CHECK_DEVICE_STATE"),
        ]
        #expect(expected.count == VhostUserRequestCode.allCases.count)
        for (code, raw, name) in expected {
            #expect(code.rawValue == raw)
            #expect(code.name == name)
        }
        #expect(VhostUserRequestCode.setVringAddr.specName == "VHOST_USER_SET_VRING_ADDR")
        #expect(VhostUserRequestCode.name(ofRawCode: 99) == "request 99")
    }

    @Test func backendCodesMatchTheSpec() {
        #expect(VhostUserBackendRequestCode.iotlbMsg.rawValue == 1)
        #expect(VhostUserBackendRequestCode.configChangeMsg.rawValue == 2)
        #expect(VhostUserBackendRequestCode.vringHostNotifierMsg.rawValue == 3)
        #expect(VhostUserBackendRequestCode.vringCall.rawValue == 4)
        #expect(VhostUserBackendRequestCode.vringErr.rawValue == 5)
        #expect(VhostUserBackendRequestCode.sharedObjectLookup.rawValue == 8)
        #expect(VhostUserBackendRequestCode.configChangeMsg.name == "BACKEND_CONFIG_CHANGE_MSG")
    }

    @Test func protocolFeatureBitsMatchTheSpec() {
        let bits: [(VhostUserProtocolFeatures, Int)] = [
            (.mq, 0), (.logSHMFD, 1), (.rarp, 2), (.replyAck, 3), (.mtu, 4), (.backendReq, 5),
            (.crossEndian, 6), (.cryptoSession, 7), (.pagefault, 8), (.config, 9),
            (.backendSendFD, 10), (.hostNotifier, 11), (.inflightSHMFD, 12), (.resetDevice, 13),
            (.inbandNotifications, 14), (.configureMemSlots, 15), (.status, 16), (.xenMmap, 17),
            (.sharedObject, 18), (.deviceState, 19),
        ]
        for (feature, bit) in bits {
            #expect(feature.rawValue == UInt64(1) << UInt64(bit))
        }
        #expect(VhostUserFeatureBits.protocolFeatures == 0x4000_0000)
        let set: VhostUserProtocolFeatures = [.mq, .replyAck, .config]
        #expect(set.names == ["MQ", "REPLY_ACK", "CONFIG"])
        #expect(VhostUserProtocolFeatures(rawValue: 1 << 40).names == ["bit 40"])
    }

    @Test func headerLayout() {
        let header = VhostUserHeader(request: 9, flags: [.version1, .needReply], size: 40)
        #expect(header.encoded == [9, 0, 0, 0, 9, 0, 0, 0, 40, 0, 0, 0])
        #expect(VhostUserHeader(bytes: header.encoded) == header)
        #expect(VhostUserHeader(bytes: [1, 0, 0, 0, 1, 0, 0]) == nil)
        #expect(VhostUserHeaderFlags(rawValue: 0x5).version == 1)
        #expect(VhostUserHeaderFlags.reply.rawValue == 0x4)
        #expect(VhostUserHeaderFlags.needReply.rawValue == 0x8)
    }
}

@Suite struct RequestRoundTripTests {
    static let region = MemoryRegionDescription(guestPhysAddr: 0x1_0000_0000, memorySize: 0x4000_0000,
                                                 userAddr: 0x7f00_0000_0000, mmapOffset: 0x1000)
    static let region2 = MemoryRegionDescription(guestPhysAddr: 0, memorySize: 0xa_0000,
                                                  userAddr: 0x7f10_0000_0000, mmapOffset: 0)

    /// Requests without fds (or with fds that decoding hands back untouched: fake numbers
    /// are fine since nothing closes them on success).
    static let requests: [VhostUserRequest] = [
        .getFeatures, .setFeatures(0x1_4000_0000), .setOwner, .resetOwner,
        .setMemTable([VhostUserMemoryRegionFD(region: region, fd: 900)]),
        .setMemTable([VhostUserMemoryRegionFD(region: region, fd: 900),
                      VhostUserMemoryRegionFD(region: region2, fd: 901)]),
        .setLogBase(VhostUserLogDescription(mmapSize: 4096, mmapOffset: 0), fd: 902),
        .setLogBase(VhostUserLogDescription(mmapSize: 4096, mmapOffset: 8), fd: nil),
        .setLogFD(fd: 903),
        .setVringNum(VhostUserVringState(index: 0, num: 256)),
        .setVringAddr(VhostUserVringAddress(index: 1, flags: 1, descUserAddr: 0x7f00_0000_1000,
                                            usedUserAddr: 0x7f00_0000_3000, availUserAddr: 0x7f00_0000_2000,
                                            logGuestAddr: 0xdead_beef)),
        .setVringBase(VhostUserVringState(index: 2, num: 17)),
        .getVringBase(VhostUserVringState(index: 3, num: 0)),
        .setVringKick(VhostUserVringFile(index: 0, fd: 904)),
        .setVringKick(VhostUserVringFile(index: 255, fd: nil)),
        .setVringCall(VhostUserVringFile(index: 1, fd: 905)),
        .setVringCall(VhostUserVringFile(index: 1, fd: nil)),
        .setVringErr(VhostUserVringFile(index: 7, fd: 906)),
        .getProtocolFeatures, .setProtocolFeatures(0x1_0209), .getQueueNum,
        .setVringEnable(VhostUserVringState(index: 0, num: 1)),
        .setBackendReqFD(fd: 907),
        .setVringEndian(VhostUserVringState(index: 0, num: 1)),
        .getConfig(VhostUserConfigSpace(offset: 0, flags: 0, payload: [UInt8](repeating: 0, count: 60))),
        .setConfig(VhostUserConfigSpace(offset: 20, flags: 1, payload: [1, 2, 3, 4])),
        .setConfig(VhostUserConfigSpace(offset: 0, flags: 0, payload: [UInt8](repeating: 7, count: 256))),
        .getInflightFD(VhostUserInflightDescription(mmapSize: 0, mmapOffset: 0, numQueues: 4, queueSize: 128)),
        .setInflightFD(VhostUserInflightDescription(mmapSize: 8192, mmapOffset: 64, numQueues: 4, queueSize: 128), fd: 908),
        .resetDevice, .vringKick(VhostUserVringState(index: 3, num: 0)), .getMaxMemSlots,
        .addMemReg(VhostUserMemoryRegionFD(region: region, fd: 909)),
        .remMemReg(region), .setStatus(0xf), .getStatus,
        .unsupported(.sendRARP), .unsupported(.iotlbMsg), .unknown(200), .unknown(0),
    ]

    @Test(arguments: requests)
    func encodeThenDecodeGivesTheRequestBack(_ request: VhostUserRequest) throws {
        for needReply in [false, true] {
            let message = request.message(needReply: needReply)
            #expect(message.header.flags.contains(.needReply) == needReply)
            #expect(message.header.flags.version == 1)
            #expect(Int(message.header.size) == message.payload.count)
            #expect(message.fds == request.fileDescriptors)
            let decoded = try VhostUserRequest.decode(message)
            #expect(decoded == request)
        }
    }

    @Test func everyRequestCodeIsCoveredByARoundTrip() {
        let supported = Set(Self.requests.compactMap { VhostUserRequestCode(rawValue: $0.rawCode) })
        let unsupported: Set<VhostUserRequestCode> = [
            .sendRARP, .netSetMTU, .iotlbMsg, .createCryptoSession, .closeCryptoSession,
            .postcopyAdvise, .postcopyListen, .postcopyEnd, .gpuSetSocket, .getSharedObject,
            .setDeviceStateFD, .checkDeviceState,
        ]
        for code in VhostUserRequestCode.allCases where !unsupported.contains(code) {
            #expect(supported.contains(code), "no round trip for \(code)")
        }
    }

    @Test func unsupportedRequestsDecodeAsUnsupported() throws {
        for code in [VhostUserRequestCode.netSetMTU, .postcopyAdvise, .gpuSetSocket, .checkDeviceState] {
            #expect(try VhostUserRequest.decode(rawMessage(code, payload: le(UInt64(1500)))) == .unsupported(code))
        }
    }

    @Test func wireLayoutOfSetVringAddr() throws {
        let payload = le(UInt32(1)) + le(UInt32(0)) + le(UInt64(0x1000)) + le(UInt64(0x3000))
            + le(UInt64(0x2000)) + le(UInt64(0))
        let decoded = try VhostUserRequest.decode(rawMessage(.setVringAddr, payload: payload))
        #expect(decoded == .setVringAddr(VhostUserVringAddress(index: 1, flags: 0, descUserAddr: 0x1000,
                                                               usedUserAddr: 0x3000, availUserAddr: 0x2000,
                                                               logGuestAddr: 0)))
        #expect(decoded.message().payload == payload)
    }

    @Test func wireLayoutOfMemoryTable() throws {
        let region = Self.region
        let payload = le(UInt32(1)) + le(UInt32(0)) + le(region.guestPhysAddr) + le(region.memorySize)
            + le(region.userAddr) + le(region.mmapOffset)
        #expect(payload.count == 40)
        let decoded = try VhostUserRequest.decode(rawMessage(.setMemTable, payload: payload, fds: [910]))
        #expect(decoded == .setMemTable([VhostUserMemoryRegionFD(region: region, fd: 910)]))
        #expect(decoded.message().payload == payload)
    }

    @Test func memoryTableWithAllEightSlotsIsAccepted() throws {
        // Some front-ends send the whole fixed-size array; the unused slots are ignored.
        var payload = le(UInt32(2)) + le(UInt32(0))
        payload += [UInt8](repeating: 0xab, count: 8 * 32)
        #expect(payload.count == VhostUserMemoryTable.maxPayloadSize)
        let decoded = try VhostUserRequest.decode(rawMessage(.setMemTable, payload: payload, fds: [911, 912]))
        guard case .setMemTable(let regions) = decoded else {
            Issue.record("decoded \(decoded)")
            return
        }
        #expect(regions.map(\.fd) == [911, 912])
    }

    @Test func wireLayoutOfSingleRegionAndKickAndInflight() throws {
        let region = Self.region
        let single = le(UInt64(0)) + le(region.guestPhysAddr) + le(region.memorySize) + le(region.userAddr)
            + le(region.mmapOffset)
        #expect(VhostUserRequest.addMemReg(VhostUserMemoryRegionFD(region: region, fd: 5)).message().payload == single)
        #expect(VhostUserRequest.setVringKick(VhostUserVringFile(index: 3, fd: nil)).message().payload
                == le(UInt64(0x103)))
        let inflight = VhostUserInflightDescription(mmapSize: 1, mmapOffset: 2, numQueues: 3, queueSize: 4)
        #expect(VhostUserRequest.getInflightFD(inflight).message().payload
                == le(UInt64(1)) + le(UInt64(2)) + le(UInt16(3)) + le(UInt16(4)) + [0, 0, 0, 0])
        let config = VhostUserConfigSpace(offset: 8, flags: 0, payload: [9, 9])
        #expect(VhostUserRequest.setConfig(config).message().payload
                == le(UInt32(8)) + le(UInt32(2)) + le(UInt32(0)) + [9, 9])
    }

    @Test func remMemRegClosesTheFDItMayCarry() throws {
        let probe = FDClosureProbe()
        let fd = probe.makeFD()
        probe.releaseOriginal()
        var message = VhostUserRequest.remMemReg(Self.region).message()
        message.fds = [fd]
        #expect(try VhostUserRequest.decode(message) == .remMemReg(Self.region))
        #expect(probe.allClosed)
    }

    @Test func unknownAndUnsupportedRequestsCloseTheirFDs() throws {
        let probe = FDClosureProbe()
        let unknown = rawMessage(77, payload: [1, 2, 3], fds: [probe.makeFD(), probe.makeFD()])
        let unsupported = rawMessage(VhostUserRequestCode.gpuSetSocket.rawValue, fds: [probe.makeFD()])
        probe.releaseOriginal()
        #expect(try VhostUserRequest.decode(unknown) == .unknown(77))
        #expect(!probe.allClosed)
        #expect(try VhostUserRequest.decode(unsupported) == .unsupported(.gpuSetSocket))
        #expect(probe.allClosed)
    }

    @Test func requestClosesItsOwnFDs() throws {
        let probe = FDClosureProbe()
        let regions = [VhostUserMemoryRegionFD(region: Self.region, fd: probe.makeFD()),
                       VhostUserMemoryRegionFD(region: Self.region2, fd: probe.makeFD())]
        probe.releaseOriginal()
        let request = try VhostUserRequest.decode(VhostUserRequest.setMemTable(regions).message())
        #expect(request.fileDescriptors.count == 2)
        #expect(!probe.allClosed)
        request.closeFileDescriptors()
        #expect(probe.allClosed)
    }
}
