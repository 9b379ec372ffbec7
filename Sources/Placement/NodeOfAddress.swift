import CSpindle
import Glibc

/// The NUMA node holding the page at `pointer`, or nil if the kernel cannot say (libnuma
/// unavailable, NUMA syscalls refused — containers often forbid them — or the page is not
/// resident).
///
/// The page must be resident: `move_pages` reports only pages that are mapped, and does not
/// fault one in. Ask about a virtqueue's rings once they start: by then the guest driver has
/// written them, so their pages exist.
public func nodeOfAddress(_ pointer: UnsafeRawPointer) -> Int? {
    // numa_available() probes get_mempolicy; below 0 means no NUMA support in this kernel/process.
    guard numa_available() >= 0 else { return nil }

    // move_pages with no target nodes only queries. Preferred over get_mempolicy because it
    // answers -ENOENT for a missing page instead of faulting it in.
    var page: UnsafeMutableRawPointer? = UnsafeMutableRawPointer(mutating: pointer)
    var status: Int32 = -1
    if move_pages(0, 1, &page, nil, &status, 0) == 0 {
        return status >= 0 ? Int(status) : nil
    }

    // move_pages is missing on kernels without CONFIG_MIGRATION; get_mempolicy is not.
    var node: Int32 = -1
    let flags = UInt32(MPOL_F_NODE | MPOL_F_ADDR)
    guard get_mempolicy(&node, nil, 0, UnsafeMutableRawPointer(mutating: pointer), flags) == 0, node >= 0 else {
        return nil
    }
    return Int(node)
}
