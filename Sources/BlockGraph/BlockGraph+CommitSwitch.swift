import BlockCommon
import BlockIO
import ControlThread
import Glibc
import Logging
import Qcow2Format

/// The end of an intermediate commit (GS, under drain of every BlockBackend whose reads pass
/// through the overlay): the overlay's image names the base as its backing file, and the
/// overlay node reads from the base node from now on.
extension BlockGraph {
    /// `overlay` (a qcow2 node whose backing node is `top`) is switched to `base`; its header
    /// gets `backingFile` and base's format. The header is written (and fdatasync'd) first;
    /// if that fails nothing changes.
    public func switchBacking(of overlay: BlockNode, from top: BlockNode, to base: BlockNode, backingFile: String) throws(BlockError) {
        ControlActor.preconditionOnControlThread("switchBacking")
        guard let driver = overlay.driver as? Qcow2Driver, let image = overlay.io as? Qcow2IO,
              case .qcow2(var options) = overlay.options.driver, case .node(let current)? = driver.backing, current === top else {
            throw BlockError(errno: EINVAL, "node '\(overlay.name)' is not a qcow2 node backed by '\(top.name)'")
        }
        let format = try Self.backingPath(to: base, for: overlay).format
        try Self.writeBackingReference(imagePath: driver.filename, fd: image.fd, clusterSize: image.layout.clusterSize,
                                       backingFile: backingFile, format: format, node: overlay.name)
        try replaceBackingChild(of: overlay, from: top, to: base)  // BlockGraph+BackingChild.swift
        // A chain from the header stays one: the rewritten header names base (implicit).
        if options.backing != .fromHeader { options.backing = .node(base.name) }
        overlay.options.driver = .qcow2(options)
        Logger(label: "spindle.block").notice("backing switched", metadata: [
            "node": "\(overlay.name)", "from": "\(top.name)", "to": "\(base.name)", "backing-file": "\(backingFile)"])
    }

    /// Rewrites the image's header area with the new backing file name and format
    /// (Qcow2BackingRewrite keeps every other byte and extension), through a descriptor of
    /// its own (the node's may be read-only), then fdatasync.
    private static func writeBackingReference(imagePath: String, fd: Int32, clusterSize: UInt64, backingFile: String,
                                              format: String, node: NodeName) throws(BlockError) {
        let subject = "qcow2 node '\(node)' ('\(imagePath)')"
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw BlockError(errno: errno, "\(subject): cannot stat its image") }
        let reader = Qcow2ImageReader(fd: fd, fileLength: UInt64(info.st_size), subject: subject)
        let first = try reader.pread(count: Int(min(UInt64(info.st_size), clusterSize)), at: 0, what: "the header")
        let bytes: [UInt8]
        do {
            bytes = try Qcow2BackingRewrite.rewrite(first, backingFile: backingFile, backingFormat: format)
        } catch {
            throw BlockError(errno: EINVAL, "\(subject): cannot name '\(backingFile)' as its backing file: \(error.message)")
        }
        let writer = Glibc.open(imagePath, O_RDWR | O_CLOEXEC)
        guard writer >= 0 else {
            let e = errno
            throw BlockError(errno: e, "\(subject): cannot open its image to update the backing file name: \(String(cString: strerror(e)))")
        }
        defer { Glibc.close(writer) }
        var rc = bytes.withUnsafeBytes { Qcow2SyncIO.write(writer, $0.baseAddress!, $0.count, at: 0) }
        if rc < 0 {
            throw BlockError(errno: -rc, "\(subject): cannot write its header: \(String(cString: strerror(-rc))); check the image with qemu-img check")
        }
        rc = Qcow2SyncIO.datasync(writer)
        if rc < 0 {
            throw BlockError(errno: -rc, "\(subject): cannot flush its header: \(String(cString: strerror(-rc)))")
        }
    }
}
