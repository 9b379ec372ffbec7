extension VhostUserRequest {
    /// Interprets a framed front-end message, checking the payload size and the number of
    /// file descriptors against what the request requires.
    ///
    /// Takes ownership of `message.fds`: on success they belong to the returned request
    /// (except fds the spec says to drop, which are closed); on error every one of them has
    /// been closed.
    public static func decode(_ message: VhostUserMessage) throws(VhostUserProtocolError) -> VhostUserRequest {
        do throws(VhostUserProtocolError) {
            return try decodeWithoutClosing(message)
        } catch {
            closeAll(message.fds)
            throw error
        }
    }

    /// Closes nothing before it might still throw, so that `decode` can close all fds
    /// exactly once on error; fds to be dropped are closed only once decoding succeeded.
    private static func decodeWithoutClosing(_ message: VhostUserMessage) throws(VhostUserProtocolError) -> VhostUserRequest {
        let header = message.header
        guard header.flags.version == VhostUserHeaderFlags.currentVersion else {
            throw VhostUserProtocolError(
                request: header.request,
                "unsupported protocol version \(header.flags.version) (flags 0x\(String(header.flags.rawValue, radix: 16))), expected 1")
        }
        guard Int(header.size) == message.payload.count else {
            throw VhostUserProtocolError(
                request: header.request,
                "header says \(header.size) payload bytes but \(message.payload.count) arrived")
        }
        guard let code = VhostUserRequestCode(rawValue: header.request) else {
            closeAll(message.fds)
            return .unknown(header.request)
        }
        let input = DecoderInput(code: code, payload: message.payload, fds: message.fds)
        let (request, discard) = try input.decode()
        closeAll(discard)
        return request
    }
}

/// One message being decoded: the request code and what came with it.
private struct DecoderInput {
    let code: VhostUserRequestCode
    let payload: [UInt8]
    let fds: [Int32]

    /// The request, plus fds that are valid to receive but must be closed unused.
    func decode() throws(VhostUserProtocolError) -> (VhostUserRequest, discard: [Int32]) {
        switch code {
        case .getFeatures: return (try noPayload(.getFeatures), [])
        case .setOwner: return (try noPayload(.setOwner), [])
        case .resetOwner: return (try noPayload(.resetOwner), [])
        case .getProtocolFeatures: return (try noPayload(.getProtocolFeatures), [])
        case .getQueueNum: return (try noPayload(.getQueueNum), [])
        case .resetDevice: return (try noPayload(.resetDevice), [])
        case .getMaxMemSlots: return (try noPayload(.getMaxMemSlots), [])
        case .getStatus: return (try noPayload(.getStatus), [])

        case .setFeatures: return (.setFeatures(try u64()), [])
        case .setProtocolFeatures: return (.setProtocolFeatures(try u64()), [])
        case .setStatus: return (.setStatus(try u64()), [])

        case .setVringNum: return (.setVringNum(try vringState()), [])
        case .setVringBase: return (.setVringBase(try vringState()), [])
        case .getVringBase: return (.getVringBase(try vringState()), [])
        case .setVringEnable: return (.setVringEnable(try vringState()), [])
        case .setVringEndian: return (.setVringEndian(try vringState()), [])
        case .vringKick: return (.vringKick(try vringState()), [])

        case .setVringAddr:
            try expectPayloadSize(VhostUserVringAddress.wireSize)
            try expectFDCount(0)
            var reader = VhostUserByteReader(payload)
            guard let address = VhostUserVringAddress(reader: &reader) else { throw truncated() }
            return (.setVringAddr(address), [])

        case .setVringKick: return (.setVringKick(try vringFile()), [])
        case .setVringCall: return (.setVringCall(try vringFile()), [])
        case .setVringErr: return (.setVringErr(try vringFile()), [])

        case .setMemTable: return (.setMemTable(try memoryTable()), [])

        case .addMemReg:
            let region = try singleRegion()
            try expectFDCount(1)
            guard let fd = fds.first else { throw truncated() }
            return (.addMemReg(VhostUserMemoryRegionFD(region: region, fd: fd)), [])

        case .remMemReg:
            // The spec tolerates one (useless) fd from older front-ends; it must be closed.
            let region = try singleRegion()
            guard fds.count <= 1 else { throw fdCountError(expected: "none (or 1, which is ignored)") }
            return (.remMemReg(region), fds)

        case .setLogBase:
            try expectPayloadSize(VhostUserLogDescription.wireSize)
            guard fds.count <= 1 else { throw fdCountError(expected: "at most 1") }
            var reader = VhostUserByteReader(payload)
            guard let log = VhostUserLogDescription(reader: &reader) else { throw truncated() }
            return (.setLogBase(log, fd: fds.first), [])

        case .setLogFD:
            try expectPayloadSize(0)
            try expectFDCount(1)
            guard let fd = fds.first else { throw truncated() }
            return (.setLogFD(fd: fd), [])

        case .setBackendReqFD:
            try expectPayloadSize(0)
            try expectFDCount(1)
            guard let fd = fds.first else { throw truncated() }
            return (.setBackendReqFD(fd: fd), [])

        case .getConfig: return (.getConfig(try configSpace()), [])
        case .setConfig: return (.setConfig(try configSpace()), [])

        case .getInflightFD:
            let inflight = try inflightDescription()
            try expectFDCount(0)
            return (.getInflightFD(inflight), [])

        case .setInflightFD:
            let inflight = try inflightDescription()
            try expectFDCount(1)
            guard let fd = fds.first else { throw truncated() }
            return (.setInflightFD(inflight, fd: fd), [])

        case .sendRARP, .netSetMTU, .iotlbMsg, .createCryptoSession, .closeCryptoSession,
             .postcopyAdvise, .postcopyListen, .postcopyEnd, .gpuSetSocket, .getSharedObject,
             .setDeviceStateFD, .checkDeviceState:
            return (.unsupported(code), fds)
        }
    }

    // MARK: - Payload shapes

    private func noPayload(_ request: VhostUserRequest) throws(VhostUserProtocolError) -> VhostUserRequest {
        try expectPayloadSize(0)
        try expectFDCount(0)
        return request
    }

    private func u64() throws(VhostUserProtocolError) -> UInt64 {
        try expectPayloadSize(8)
        try expectFDCount(0)
        var reader = VhostUserByteReader(payload)
        guard let value = reader.readUInt64() else { throw truncated() }
        return value
    }

    private func vringState() throws(VhostUserProtocolError) -> VhostUserVringState {
        try expectPayloadSize(VhostUserVringState.wireSize)
        try expectFDCount(0)
        var reader = VhostUserByteReader(payload)
        guard let state = VhostUserVringState(reader: &reader) else { throw truncated() }
        return state
    }

    /// SET_VRING_KICK/CALL/ERR: an fd must come with the message iff the NOFD bit is clear.
    private func vringFile() throws(VhostUserProtocolError) -> VhostUserVringFile {
        try expectPayloadSize(8)
        var reader = VhostUserByteReader(payload)
        guard let value = reader.readUInt64() else { throw truncated() }
        let index = UInt8(truncatingIfNeeded: value & VhostUserVringFile.indexMask)
        if value & VhostUserVringFile.noFDMask != 0 {
            guard fds.isEmpty else {
                throw error("ring \(index): the no-fd flag is set but \(describe(fdCount: fds.count)) arrived")
            }
            return VhostUserVringFile(index: index, fd: nil)
        }
        guard let fd = fds.first else {
            throw error("ring \(index): no file descriptor arrived and the no-fd flag is clear")
        }
        try expectFDCount(1)
        return VhostUserVringFile(index: index, fd: fd)
    }

    /// SET_MEM_TABLE: nregions (≤ 8), padding, then at least nregions region slots
    /// (QEMU sends exactly nregions; older senders the whole 8-slot array), one fd per
    /// region.
    private func memoryTable() throws(VhostUserProtocolError) -> [VhostUserMemoryRegionFD] {
        var reader = VhostUserByteReader(payload)
        guard let count = reader.readUInt32(), reader.skip(4) else {
            throw error("payload is \(payload.count) bytes, too short for the region count (needs \(VhostUserMemoryTable.headerSize))")
        }
        guard count >= 1 else { throw error("the memory table has no regions") }
        guard count <= VhostUserMemoryTable.maxRegions else {
            throw error("the memory table has \(count) regions, at most \(VhostUserMemoryTable.maxRegions) are allowed")
        }
        let regionCount = Int(count)
        let needed = VhostUserMemoryTable.headerSize + regionCount * MemoryRegionDescription.wireSize
        guard payload.count >= needed else {
            throw error("payload is \(payload.count) bytes, too short for \(regionCount) regions (needs \(needed))")
        }
        guard payload.count <= VhostUserMemoryTable.maxPayloadSize else {
            throw error("payload is \(payload.count) bytes, more than the largest memory table (\(VhostUserMemoryTable.maxPayloadSize))")
        }
        guard fds.count == regionCount else {
            throw error("\(regionCount) regions but \(describe(fdCount: fds.count)); one per region is required")
        }
        var regions: [VhostUserMemoryRegionFD] = []
        regions.reserveCapacity(regionCount)
        for fd in fds {
            guard let region = MemoryRegionDescription(reader: &reader) else { throw truncated() }
            regions.append(VhostUserMemoryRegionFD(region: region, fd: fd))
        }
        return regions
    }

    /// ADD_MEM_REG / REM_MEM_REG: 64-bit padding and one region (fds checked by caller).
    private func singleRegion() throws(VhostUserProtocolError) -> MemoryRegionDescription {
        try expectPayloadSize(VhostUserMemoryTable.singleRegionPayloadSize)
        var reader = VhostUserByteReader(payload)
        guard reader.skip(8), let region = MemoryRegionDescription(reader: &reader) else { throw truncated() }
        return region
    }

    /// GET_CONFIG / SET_CONFIG: offset, size, flags, then exactly `size` (≤ 256) bytes.
    private func configSpace() throws(VhostUserProtocolError) -> VhostUserConfigSpace {
        try expectFDCount(0)
        var reader = VhostUserByteReader(payload)
        guard let offset = reader.readUInt32(), let size = reader.readUInt32(),
              let flags = reader.readUInt32() else {
            throw error("payload is \(payload.count) bytes, too short for the config header (needs \(VhostUserConfigSpace.headerSize))")
        }
        guard size <= VhostUserConfigSpace.maxSize else {
            throw error("config size is \(size) bytes, at most \(VhostUserConfigSpace.maxSize) are allowed")
        }
        let expected = VhostUserConfigSpace.headerSize + Int(size)
        guard payload.count == expected else {
            throw error("payload is \(payload.count) bytes, expected \(expected) for \(size) bytes of config")
        }
        guard let bytes = reader.readBytes(Int(size)) else { throw truncated() }
        return VhostUserConfigSpace(offset: offset, flags: flags, payload: bytes)
    }

    private func inflightDescription() throws(VhostUserProtocolError) -> VhostUserInflightDescription {
        try expectPayloadSize(VhostUserInflightDescription.wireSize)
        var reader = VhostUserByteReader(payload)
        guard let inflight = VhostUserInflightDescription(reader: &reader) else { throw truncated() }
        return inflight
    }

    // MARK: - Checks and errors

    private func expectPayloadSize(_ expected: Int) throws(VhostUserProtocolError) {
        guard payload.count == expected else {
            throw error(expected == 0
                ? "payload is \(payload.count) bytes, expected none"
                : "payload is \(payload.count) bytes, expected \(expected)")
        }
    }

    private func expectFDCount(_ expected: Int) throws(VhostUserProtocolError) {
        guard fds.count == expected else {
            throw fdCountError(expected: expected == 0 ? "none" : "\(expected)")
        }
    }

    private func fdCountError(expected: String) -> VhostUserProtocolError {
        error("\(describe(fdCount: fds.count)) arrived, expected \(expected)")
    }

    private func describe(fdCount: Int) -> String {
        fdCount == 1 ? "1 file descriptor" : "\(fdCount) file descriptors"
    }

    private func error(_ problem: String) -> VhostUserProtocolError {
        VhostUserProtocolError(code, problem)
    }

    /// Unreachable after the size checks; thrown rather than trapping.
    private func truncated() -> VhostUserProtocolError {
        error("payload of \(payload.count) bytes ended early")
    }
}
