import CSpindle
import Foundation
import Glibc
import VhostUser
import VhostUserFrontend

/// One split ring in shared memory, set up with raw messages and no protocol features (so
/// the ring is enabled as soon as it has a kick eventfd, and no request is acknowledged).
final class RawRing: @unchecked Sendable {
    let memory: SharedMemoryRegion
    let memoryName: String
    let kickFD: Int32
    let callFD: Int32
    static let size: UInt32 = 8
    /// SET_VRING_ADDR as `start` sent it.
    private(set) var ringAddress: VhostUserVringAddress?

    init() throws {
        memoryName = "session-test-\(UUID().uuidString.prefix(8))"
        memory = try SharedMemoryRegion(size: 1 << 20, name: memoryName)
        kickFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
        callFD = eventfd(0, Int32(EFD_CLOEXEC | EFD_NONBLOCK))
    }

    deinit {
        Glibc.close(kickFD)
        Glibc.close(callFD)
    }

    /// SET_OWNER, SET_FEATURES, SET_MEM_TABLE and ring 0 up to SET_VRING_KICK, at avail index
    /// `base`; `kickless`: SET_VRING_KICK with NOFD instead of the kick eventfd.
    func start(on frontend: RawFrontend, features: UInt64, base: UInt16, kickless: Bool = false) throws {
        let size = Int(Self.size)
        let descriptors = try memory.allocate(16 * size, alignment: 16)
        let available = try memory.allocate(6 + 2 * size, alignment: 2)
        let used = try memory.allocate(6 + 8 * size, alignment: 4)
        try frontend.send(.setOwner)
        try frontend.send(.setFeatures(features))
        try frontend.send(.setMemTable([VhostUserMemoryRegionFD(region: memory.regionDescription, fd: memory.fd)]))
        try frontend.send(.setVringNum(VhostUserVringState(index: 0, num: Self.size)))
        try frontend.send(.setVringBase(VhostUserVringState(index: 0, num: UInt32(base))))
        let address = VhostUserVringAddress(
            index: 0, flags: 0, descUserAddr: memory.userAddress(of: descriptors),
            usedUserAddr: memory.userAddress(of: used), availUserAddr: memory.userAddress(of: available), logGuestAddr: 0)
        ringAddress = address
        try frontend.send(.setVringAddr(address))
        try frontend.send(.setVringCall(VhostUserVringFile(index: 0, fd: callFD)))
        try frontend.send(.setVringKick(VhostUserVringFile(index: 0, fd: kickless ? nil : kickFD)))
    }

    /// Starts ring 0 again after GET_VRING_BASE stopped it: base, call, kick.
    func restart(on frontend: RawFrontend, base: UInt16, kickless: Bool) throws {
        try frontend.send(.setVringBase(VhostUserVringState(index: 0, num: UInt32(base))))
        try frontend.send(.setVringCall(VhostUserVringFile(index: 0, fd: callFD)))
        try frontend.send(.setVringKick(VhostUserVringFile(index: 0, fd: kickless ? nil : kickFD)))
    }

    /// Whether a mapping of the shared memory covers `address` in this process.
    func maps(address: UInt) -> Bool {
        let maps = (try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8)) ?? ""
        return maps.split(separator: "\n").contains { line in
            guard line.contains("memfd:\(memoryName) "),
                  let range = line.split(separator: " ").first?.split(separator: "-"), range.count == 2,
                  let start = UInt(range[0], radix: 16), let end = UInt(range[1], radix: 16) else { return false }
            return start <= address && address < end
        }
    }

    /// This process's mappings of the shared memory, as /proc/self/maps shows them (for messages).
    var mappingLines: [String] {
        let maps = (try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8)) ?? ""
        return maps.split(separator: "\n").filter { $0.contains("memfd:\(memoryName) ") }.map(String.init)
    }

    /// How many mappings of the shared memory this process has (the frontend's is one).
    var mappingCount: Int {
        let maps = (try? String(contentsOfFile: "/proc/self/maps", encoding: .utf8)) ?? ""
        return maps.split(separator: "\n").filter { $0.contains("memfd:\(memoryName) ") }.count
    }
}
