// Front-end side: turning a request into a message, for Spindle's test front-end and
// benchmark client. `VhostUserRequest.decode(request.message())` gives the request back.

extension VhostUserRequest {
    /// The request code this request is sent with.
    public var rawCode: UInt32 {
        switch self {
        case .getFeatures: VhostUserRequestCode.getFeatures.rawValue
        case .setFeatures: VhostUserRequestCode.setFeatures.rawValue
        case .setOwner: VhostUserRequestCode.setOwner.rawValue
        case .resetOwner: VhostUserRequestCode.resetOwner.rawValue
        case .setMemTable: VhostUserRequestCode.setMemTable.rawValue
        case .setLogBase: VhostUserRequestCode.setLogBase.rawValue
        case .setLogFD: VhostUserRequestCode.setLogFD.rawValue
        case .setVringNum: VhostUserRequestCode.setVringNum.rawValue
        case .setVringAddr: VhostUserRequestCode.setVringAddr.rawValue
        case .setVringBase: VhostUserRequestCode.setVringBase.rawValue
        case .getVringBase: VhostUserRequestCode.getVringBase.rawValue
        case .setVringKick: VhostUserRequestCode.setVringKick.rawValue
        case .setVringCall: VhostUserRequestCode.setVringCall.rawValue
        case .setVringErr: VhostUserRequestCode.setVringErr.rawValue
        case .getProtocolFeatures: VhostUserRequestCode.getProtocolFeatures.rawValue
        case .setProtocolFeatures: VhostUserRequestCode.setProtocolFeatures.rawValue
        case .getQueueNum: VhostUserRequestCode.getQueueNum.rawValue
        case .setVringEnable: VhostUserRequestCode.setVringEnable.rawValue
        case .setBackendReqFD: VhostUserRequestCode.setBackendReqFD.rawValue
        case .setVringEndian: VhostUserRequestCode.setVringEndian.rawValue
        case .getConfig: VhostUserRequestCode.getConfig.rawValue
        case .setConfig: VhostUserRequestCode.setConfig.rawValue
        case .getInflightFD: VhostUserRequestCode.getInflightFD.rawValue
        case .setInflightFD: VhostUserRequestCode.setInflightFD.rawValue
        case .resetDevice: VhostUserRequestCode.resetDevice.rawValue
        case .vringKick: VhostUserRequestCode.vringKick.rawValue
        case .getMaxMemSlots: VhostUserRequestCode.getMaxMemSlots.rawValue
        case .addMemReg: VhostUserRequestCode.addMemReg.rawValue
        case .remMemReg: VhostUserRequestCode.remMemReg.rawValue
        case .setStatus: VhostUserRequestCode.setStatus.rawValue
        case .getStatus: VhostUserRequestCode.getStatus.rawValue
        case .unsupported(let code): code.rawValue
        case .unknown(let raw): raw
        }
    }

    /// The spec name of the request (`request 99` for unknown codes), for log lines.
    public var name: String { VhostUserRequestCode.name(ofRawCode: rawCode) }

    /// The message a front-end sends for this request: version 1, NEED_REPLY if asked, the
    /// payload, and the request's fds (still owned by the caller; sending duplicates them).
    /// `.unsupported` and `.unknown` encode with an empty payload.
    public func message(needReply: Bool = false) -> VhostUserMessage {
        var writer = VhostUserByteWriter(capacity: 64)
        switch self {
        case .getFeatures, .setOwner, .resetOwner, .getProtocolFeatures, .getQueueNum,
             .resetDevice, .getMaxMemSlots, .getStatus, .setLogFD, .setBackendReqFD,
             .unsupported, .unknown:
            break
        case .setFeatures(let value), .setProtocolFeatures(let value), .setStatus(let value):
            writer.append(value)
        case .setVringNum(let state), .setVringBase(let state), .getVringBase(let state),
             .setVringEnable(let state), .setVringEndian(let state), .vringKick(let state):
            state.encode(into: &writer)
        case .setVringAddr(let address):
            address.encode(into: &writer)
        case .setVringKick(let file), .setVringCall(let file), .setVringErr(let file):
            writer.append(file.wireValue)
        case .setMemTable(let regions):
            writer.append(UInt32(truncatingIfNeeded: regions.count))
            writer.append(UInt32(0))
            for entry in regions {
                entry.region.encode(into: &writer)
            }
        case .addMemReg(let entry):
            writer.append(UInt64(0))
            entry.region.encode(into: &writer)
        case .remMemReg(let region):
            writer.append(UInt64(0))
            region.encode(into: &writer)
        case .setLogBase(let log, _):
            log.encode(into: &writer)
        case .getConfig(let config), .setConfig(let config):
            config.encode(into: &writer)
        case .getInflightFD(let inflight), .setInflightFD(let inflight, _):
            inflight.encode(into: &writer)
        }
        let flags: VhostUserHeaderFlags = needReply ? [.version1, .needReply] : .version1
        return VhostUserMessage(request: rawCode, flags: flags, payload: writer.bytes, fds: fileDescriptors)
    }
}
