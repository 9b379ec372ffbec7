import BlockCommon
import CSpindle
import Glibc

/// Image locking the way QEMU's file-posix does it, so Spindle and QEMU processes see each
/// other's locks: one byte per permission at 100+bit ("I hold this permission") and one at
/// 200+bit ("I do not let others hold it"), taken as shared OFD locks. A conflict is a lock
/// held by another open file description on a byte we need to be free.
struct ImageLock {
    private static let permissionBase: Int64 = 100
    private static let unsharedBase: Int64 = 200

    /// QEMU's BLK_PERM_* bit numbers: consistent-read 0, write 1, write-unchanged 2, resize 3.
    private static let qemuBitCount = 4

    static func qemuBits(_ permissions: BlockPermissions) -> UInt8 {
        var bits: UInt8 = 0
        if permissions.contains(.consistentRead) { bits |= 1 << 0 }
        if permissions.contains(.write) { bits |= 1 << 1 }
        if permissions.contains(.resize) { bits |= 1 << 3 }
        return bits
    }

    /// Bits we let others hold: everything but write when we write or read (so readers
    /// exclude writers and writers exclude everyone but readers of the unchanging kind).
    static func sharedBits(for permissions: BlockPermissions) -> UInt8 {
        let all: UInt8 = 0x0F
        return permissions.isEmpty ? all : all & ~(1 << 1)
    }

    /// Checks for conflicts, then takes the lock bytes for `held` permissions and `shared`
    /// bits, releasing bytes no longer needed. Returns an error naming the conflict.
    /// `checkingConflicts: false` (a reopen moving locks that another descriptor of ours
    /// holds already to a new one) sets the bytes without looking: the test would see our
    /// own locks as another's.
    static func apply(fd: Int32, held: UInt8, shared: UInt8, path: String, checkingConflicts: Bool = true) throws(BlockError) {
        let unshared = ~shared & 0x0F
        for bit in 0..<qemuBitCount where checkingConflicts {
            let mask: UInt8 = 1 << bit
            if held & mask != 0, spindle_ofd_test(fd, unsharedBase + Int64(bit), F_WRLCK) == 1 {
                throw lockError(path: path, bit: bit)
            }
            if unshared & mask != 0, spindle_ofd_test(fd, permissionBase + Int64(bit), F_WRLCK) == 1 {
                throw lockError(path: path, bit: bit)
            }
        }
        for bit in 0..<qemuBitCount {
            let mask: UInt8 = 1 << bit
            try set(fd: fd, offset: permissionBase + Int64(bit), locked: held & mask != 0, path: path, bit: bit)
            try set(fd: fd, offset: unsharedBase + Int64(bit), locked: unshared & mask != 0, path: path, bit: bit)
        }
    }

    static func releaseAll(fd: Int32) {
        for bit in 0..<qemuBitCount {
            _ = spindle_ofd_setlk(fd, permissionBase + Int64(bit), F_UNLCK)
            _ = spindle_ofd_setlk(fd, unsharedBase + Int64(bit), F_UNLCK)
        }
    }

    private static func set(fd: Int32, offset: Int64, locked: Bool, path: String, bit: Int) throws(BlockError) {
        let rc = spindle_ofd_setlk(fd, offset, locked ? F_RDLCK : F_UNLCK)
        if rc == -EAGAIN || rc == -EACCES { throw lockError(path: path, bit: bit) }
        if rc < 0 && rc != -EOPNOTSUPP && rc != -ENOLCK {
            throw BlockError(errno: -rc, "cannot lock image '\(path)': \(String(cString: strerror(-rc)))")
        }
    }

    /// Whether another open file description refuses writers of the image (holds the
    /// "unshared write" byte): asked through `fd`, whose own locks never count.
    static func othersRefuseWriters(fd: Int32) -> Bool {
        spindle_ofd_test(fd, unsharedBase + 1, F_WRLCK) == 1
    }

    static func writeLockError(path: String) -> BlockError { lockError(path: path, bit: 1) }

    private static func lockError(path: String, bit: Int) -> BlockError {
        let names = ["consistent read", "write", "write unchanged", "resize"]
        return BlockError(errno: EAGAIN,
            "image '\(path)' is locked by another process (\(names[bit]) lock): is another spindle or QEMU using it? Stop it, or use locking=off if you are sure")
    }
}
