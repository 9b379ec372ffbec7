/// A front-end request, decoded and validated (see `VhostUserRequest.decode`).
///
/// File descriptors in associated values are owned by whoever holds the request; use
/// `fileDescriptors` to close them all when rejecting a request.
public enum VhostUserRequest: Sendable, Hashable {
    case getFeatures
    case setFeatures(UInt64)
    case setOwner
    case resetOwner
    /// One to eight regions, each with its own fd (count of fds = count of regions).
    case setMemTable([VhostUserMemoryRegionFD])
    /// Dirty-log area; the fd is present when LOG_SHMFD was negotiated.
    case setLogBase(VhostUserLogDescription, fd: Int32?)
    case setLogFD(fd: Int32)
    case setVringNum(VhostUserVringState)
    case setVringAddr(VhostUserVringAddress)
    case setVringBase(VhostUserVringState)
    /// Only `index` is meaningful; `num` is reserved.
    case getVringBase(VhostUserVringState)
    case setVringKick(VhostUserVringFile)
    case setVringCall(VhostUserVringFile)
    case setVringErr(VhostUserVringFile)
    case getProtocolFeatures
    case setProtocolFeatures(UInt64)
    case getQueueNum
    /// `num` is 1 to enable, 0 to disable.
    case setVringEnable(VhostUserVringState)
    /// The back-end channel: a socket for back-end → front-end messages.
    case setBackendReqFD(fd: Int32)
    /// `num` 0 = little-endian, 1 = big-endian (legacy devices, CROSS_ENDIAN).
    case setVringEndian(VhostUserVringState)
    /// The payload bytes are placeholders; only offset, size and flags matter.
    case getConfig(VhostUserConfigSpace)
    case setConfig(VhostUserConfigSpace)
    case getInflightFD(VhostUserInflightDescription)
    case setInflightFD(VhostUserInflightDescription, fd: Int32)
    case resetDevice
    /// In-band kick (INBAND_NOTIFICATIONS); `num` is reserved.
    case vringKick(VhostUserVringState)
    case getMaxMemSlots
    case addMemReg(VhostUserMemoryRegionFD)
    /// Any fd the front-end sent along has already been closed, as the spec demands.
    case remMemReg(MemoryRegionDescription)
    /// The virtio device status byte (in a u64).
    case setStatus(UInt64)
    case getStatus
    /// A request the spec defines but Spindle does not implement (net, crypto, GPU,
    /// postcopy, IOTLB, shared objects, device state transfer). Its payload was not
    /// checked and any fds were closed.
    case unsupported(VhostUserRequestCode)
    /// A request code the spec does not define. Any fds were closed.
    case unknown(UInt32)

    /// The file descriptors this request owns.
    public var fileDescriptors: [Int32] {
        switch self {
        case .setMemTable(let regions): regions.map(\.fd)
        case .setLogBase(_, let fd): fd.map { [$0] } ?? []
        case .setLogFD(let fd), .setBackendReqFD(let fd), .setInflightFD(_, let fd): [fd]
        case .setVringKick(let file), .setVringCall(let file), .setVringErr(let file):
            file.fd.map { [$0] } ?? []
        case .addMemReg(let region): [region.fd]
        default: []
        }
    }

    /// Closes every fd the request owns (e.g. when the handler rejects it).
    public func closeFileDescriptors() {
        closeAll(fileDescriptors)
    }
}
