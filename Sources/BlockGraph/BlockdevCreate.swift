import BlockCommon
import BlockIO
import ControlThread
import Glibc
import Logging
import Qcow2Format

/// blockdev-create's work (GS: control thread; the file I/O runs on a thread of its own so
/// the monitor stays responsive). Errors are the job's error text, QEMU's where it has one.
extension BlockGraph {
    public func createImage(_ options: BlockdevCreateOptions, jobID: String) async throws(BlockError) {
        ControlActor.preconditionOnControlThread("createImage")
        switch options {
        case .file(let filename, let size, let preallocation):
            try await createFile(filename, size: size, preallocation: preallocation)
        case .qcow2(let qcow2):
            try await createQcow2(qcow2, jobID: jobID)
        }
        Logger(label: "spindle.block").notice("image created", metadata: [
            "job": "\(jobID)", "driver": "\(options.driverName)"])
    }

    /// `driver: file`: the file is created (or emptied) and set to `size`, under QEMU's write
    /// lock, so a process using the image makes this fail instead of losing its data.
    private func createFile(_ filename: String, size: UInt64, preallocation: BlockdevCreateOptions.Preallocation) async throws(BlockError) {
        guard preallocation == .off || preallocation == .falloc else {
            throw BlockError(errno: ENOTSUP, "Unsupported preallocation mode '\(preallocation.rawValue)' (Spindle creates files with preallocation off or falloc)")
        }
        guard size <= UInt64(Int64.max) else { throw BlockError(errno: EFBIG, "Image size \(size) is too large") }
        try refuseFileInUse(filename)
        let fd = Glibc.open(filename, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            let e = errno
            throw BlockError(errno: e, "Could not create '\(filename)': \(String(cString: strerror(e)))")
        }
        defer { Glibc.close(fd) }
        try ImageLock.apply(fd: fd, held: ImageLock.qemuBits([.write, .resize]), shared: 0x0F & ~(1 << 3), path: filename)
        let failure = await Self.offControlThread { () -> String? in
            if ftruncate(fd, 0) != 0 || ftruncate(fd, off_t(size)) != 0 {
                return "Could not resize file '\(filename)' to \(size) bytes: \(String(cString: strerror(errno)))"
            }
            if preallocation == .falloc, size > 0, case let rc = posix_fallocate(fd, 0, off_t(size)), rc != 0 {
                return "Could not preallocate '\(filename)': \(String(cString: strerror(rc)))"
            }
            return nil
        }
        if let failure { throw BlockError(errno: EIO, failure) }
    }

    /// `driver: qcow2`: the image is laid out in memory (Qcow2ImageWriter), then the file is
    /// emptied, sized and written, and made durable.
    private func createQcow2(_ request: BlockdevCreateQcow2, jobID: String) async throws(BlockError) {
        guard request.preallocation == .off else {
            throw BlockError(errno: ENOTSUP, "Unsupported preallocation mode '\(request.preallocation.rawValue)' (Spindle creates qcow2 images with preallocation off)")
        }
        let target = try openCreationTarget(request.file, jobID: jobID)
        var options = Qcow2CreateOptions(size: request.size)
        if let version = request.version { options.version = version }
        if let clusterSize = request.clusterSize { options.clusterSize = clusterSize }
        if let refcountBits = request.refcountBits { options.refcountBits = refcountBits }
        options.lazyRefcounts = request.lazyRefcounts ?? false
        options.backingFile = request.backingFile
        options.backingFormat = request.backingFormat
        let image: Qcow2NewImage
        do throws(Qcow2FormatError) {
            image = try Qcow2ImageWriter.layout(options)
        } catch {
            await target.release(self)
            throw BlockError(errno: EINVAL, error.message)
        }
        let fd = target.fd
        let path = target.path
        let failure = await Self.offControlThread { () -> String? in
            guard ftruncate(fd, 0) == 0, ftruncate(fd, off_t(image.fileLength)) == 0 else {
                return "Could not resize '\(path)' for the new image: \(String(cString: strerror(errno)))"
            }
            for write in image.writes {
                let rc = write.bytes.withUnsafeBytes { bytes -> Int32 in
                    guard let base = bytes.baseAddress else { return 0 }
                    return Qcow2SyncIO.write(fd, base, bytes.count, at: write.offset)
                }
                if rc < 0 { return "Could not write the qcow2 metadata to '\(path)': \(String(cString: strerror(-rc)))" }
            }
            let rc = Qcow2SyncIO.datasync(fd)
            return rc == 0 ? nil : "Could not flush '\(path)' to disk: \(String(cString: strerror(-rc)))"
        }
        await target.release(self)
        if let failure { throw BlockError(errno: EIO, failure) }
    }

    /// Refuses to overwrite a file a node of this daemon has open (such a node holds no image
    /// lock while nothing uses it, so the lock alone would not stop it).
    func refuseFileInUse(_ filename: String, except: NodeName? = nil) throws(BlockError) {
        let real = Qcow2ChainOpening.realPath(filename)
        // Nodes a user added first: a node opened from a header is named through its owner.
        for node in nodes.values.sorted(by: { ($0.isImplicit ? 1 : 0, $0.name.rawValue) < ($1.isImplicit ? 1 : 0, $1.name.rawValue) })
        where node.name != except {
            let owner = node.isImplicit ? " (a backing layer opened from the header of node '\(monitorOwner(of: node).name)')" : ""
            if case .file(let file) = node.options.driver, Qcow2ChainOpening.realPath(file.filename) == real {
                throw BlockError(errno: EBUSY, "'\(filename)' is open as node '\(node.name)'\(owner); use that node as the file to create the image in, or delete it first")
            }
            if let qcow2 = node.driver as? Qcow2Driver, Qcow2ChainOpening.realPath(qcow2.filename) == real {
                throw BlockError(errno: EBUSY, "'\(filename)' is the image of qcow2 node '\(node.name)'\(owner); delete that node first")
            }
        }
    }

    /// Runs blocking file work on a thread of its own and waits for it without holding the
    /// control thread.
    static func offControlThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        await withCheckedContinuation { continuation in
            pthread_detach(PlainThread.spawn { continuation.resume(returning: body()) })
        }
    }
}
