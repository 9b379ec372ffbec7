import BlockCommon
import ControlThread
import CSpindle
import Glibc

/// librbd and librados, loaded on first use (dlopen), so that spindle starts and serves
/// files on hosts without Ceph; only an rbd node needs them. `SPINDLE_LIBRBD` and
/// `SPINDLE_LIBRADOS` name other files (a test hook: a wrong name shows what a host without
/// Ceph does).
@ControlActor
enum RbdLibrary {
    private static var loaded = false

    static func load(for node: NodeName) throws(BlockError) {
        if loaded { return }
        let librbd = getenv("SPINDLE_LIBRBD").map { String(cString: $0) } ?? "librbd.so.1"
        let librados = getenv("SPINDLE_LIBRADOS").map { String(cString: $0) } ?? "librados.so.2"
        var error = [CChar](repeating: 0, count: 512)
        let rc = spindle_rbd_load(librbd, librados, &error, error.count)
        guard rc == 0 else {
            let detail = error.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
            throw BlockError(errno: ENOENT, "node '\(node)': driver rbd needs librbd, which cannot be loaded (\(detail)); install the librbd1 package (apt-get install librbd1)")
        }
        loaded = true
    }
}
