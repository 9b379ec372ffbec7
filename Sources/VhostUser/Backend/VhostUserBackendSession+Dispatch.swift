/// Routes each decoded request to the handler of its topic. A request this session does not
/// implement goes to the device (`handleDeviceRequest`), then ends the connection.
extension VhostUserBackendSession {
    /// `payload`: the message's raw payload, for the device's own requests.
    func dispatch(_ request: VhostUserRequest, payload: [UInt8]) async -> VhostUserRequestOutcome {
        switch request {
        case .getFeatures: return getFeatures()
        case .setFeatures(let features): return await setFeatures(features)
        case .getProtocolFeatures: return getProtocolFeatures()
        case .setProtocolFeatures(let features): return setProtocolFeatures(features)
        case .setOwner: return .done
        case .resetOwner, .resetDevice: return await reset()
        case .getQueueNum: return .reply(VhostUserReply.u64(.getQueueNum, UInt64(device.queueCount)))
        case .getMaxMemSlots: return .reply(VhostUserReply.u64(.getMaxMemSlots, Self.maxMemorySlots))

        case .setMemTable(let regions): return await setMemoryTable(regions)
        case .addMemReg(let region): return await addMemoryRegion(region)
        case .remMemReg(let region): return await removeMemoryRegion(region)

        case .setVringNum(let state): return setVringNum(state)
        case .setVringAddr(let address): return await setVringAddr(address)
        case .setVringBase(let state): return setVringBase(state)
        case .getVringBase(let state): return await getVringBase(state)
        case .setVringKick(let file): return await setVringKick(file)
        case .setVringCall(let file): return await setVringCall(file)
        case .setVringErr(let file): return setVringErr(file)
        case .setVringEnable(let state): return await setVringEnable(state)
        case .setVringEndian: return .failed("legacy (big-endian) rings are not supported")

        case .setBackendReqFD(let channel): return setBackendChannel(channel)
        case .getConfig(let window): return getConfig(window)
        case .setConfig(let window): return setConfig(window)
        case .getInflightFD(let wanted): return getInflightFD(wanted)
        case .setInflightFD(let description, let bufferFD): return await setInflightFD(description, bufferFD: bufferFD)

        case .setLogBase(let description, let fd): return await setLogBase(description, fd: fd)
        case .setLogFD(let fd): return setLogFD(fd)
        case .vringKick, .setStatus, .getStatus:
            request.closeFileDescriptors()
            return .fatal("\(request) needs a protocol feature Spindle did not offer")
        case .unsupported(let code):
            if let outcome = await device.handleDeviceRequest(code, payload: payload) { return outcome }
            return .fatal("\(code) is not supported by a \(device.typeName) backend")
        case .unknown(let code):
            return .fatal("unknown request code \(code)")
        }
    }

    func queueIndex(_ raw: UInt32) -> Int? {
        raw < UInt32(vrings.count) ? Int(raw) : nil
    }
}
