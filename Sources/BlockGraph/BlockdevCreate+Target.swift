import BlockCommon
import BlockIO
import ControlThread
import Glibc

/// The file a qcow2 image is being created in, held for the creation: a file node of the
/// graph (used through a BlockBackend of the job's own with write and resize permissions,
/// so its image locks keep other processes out, and blocked for everything else), or a
/// file opened from an inline description and closed afterwards.
@ControlActor
struct ImageCreationTarget {
    enum Holder {
        case node(BlockNode, BlockBackend)
        case owned(FileDriver)
    }

    let holder: Holder
    let fd: Int32
    let path: String

    /// Gives the file back; a node reads its new length.
    func release(_ graph: BlockGraph) async {
        switch holder {
        case .node(let node, let backend):
            _ = node.driver.refreshLength()
            graph.setBlocker(nil, on: node.name)
            await graph.deleteBackend(backend)
        case .owned(let driver):
            try? driver.applyPermissions([])
            driver.close()
        }
    }
}

extension BlockGraph {
    static let creationBlocker = "block device is in use by block job: create"

    /// The qcow2 creation's `file`: an unused, writable driver=file node, or an inline file.
    func openCreationTarget(_ file: Qcow2Options.File, jobID: String) throws(BlockError) -> ImageCreationTarget {
        switch file {
        case .node(let name):
            guard let node = nodes[name] else {
                throw BlockError(errno: ENOENT, "Cannot find device=\(name) nor node_name=\(name)")
            }
            if let blocker = node.blocker { throw BlockError(errno: EBUSY, "Node '\(name)' is busy: \(blocker)") }
            guard case .file(let options) = node.options.driver, let io = node.io as? FileIO else {
                throw BlockError(errno: EINVAL, "Node '\(name)' (driver \(node.driverName)) cannot hold a new qcow2 image; give a driver=file node")
            }
            guard !options.direct else {
                throw BlockError(errno: ENOTSUP, "Node '\(name)' uses cache.direct=on; creating qcow2 images through O_DIRECT is not supported yet (open it without cache.direct)")
            }
            guard node.isActive else {
                throw BlockError(errno: EPERM, "Node '\(name)' is inactive; activate it first (blockdev-set-active)")
            }
            guard io.writable else { throw BlockError(errno: EROFS, "Block node '\(name)' is read-only") }
            guard node.userCount == 0, node.parents.isEmpty else {
                let parents = node.parents.map(\.rawValue).sorted()
                throw BlockError(errno: EBUSY, "Node '\(name)' is in use (\(parents.isEmpty ? "by an export or a job" : "by node '\(parents.joined(separator: "', '"))'")); an image can only be created in a node nothing else uses")
            }
            let backend = try createBackend(name: "#create-\(jobID)", node: name, permissions: [.write, .resize])
            setBlocker(Self.creationBlocker, on: name)
            return ImageCreationTarget(holder: .node(node, backend), fd: io.fd, path: options.filename)
        case .inline(let options):
            guard !options.direct else {
                throw BlockError(errno: ENOTSUP, "creating qcow2 images through O_DIRECT (file.cache.direct=on) is not supported yet")
            }
            try refuseFileInUse(options.filename)
            var writable = options
            writable.readOnly = false
            let driver = try FileDriver.open(writable, node: NodeName("#create-\(jobID)"), nodes: [:])
            guard let io = driver.io as? FileIO else {
                driver.close()
                throw BlockError(errno: EINVAL, "'\(options.filename)' is not a plain file")
            }
            do throws(BlockError) {
                try driver.applyPermissions([[.write, .resize]])
            } catch {
                driver.close()
                throw error
            }
            return ImageCreationTarget(holder: .owned(driver), fd: io.fd, path: options.filename)
        }
    }
}
