import BlockCommon
import ControlThread

/// blockdev-create {job-id, options}: the options' types and QEMU's texts for them (members
/// named "options.x" as QEMU's visitor names them), then the target starts the job. What
/// the values mean (sizes, cluster sizes, the file node) is checked by the job, whose error
/// says what was wrong, as in QEMU.
@ControlActor
struct BlockdevCreateCommands {
    let target: any MonitorCommandTarget

    private enum Driver: String { case file, qcow2 }
    private enum Version: String { case v2, v3 }
    private enum CompressionType: String { case zlib, zstd }
    /// QEMU's BlockdevDriver names that it can create images for and Spindle cannot.
    private static let otherCreatingDrivers: Set<String> = [
        "gluster", "luks", "nfs", "parallels", "qcow", "qed", "rbd", "ssh", "vdi", "vhdx", "vmdk", "vpc", "raw", "host_device",
    ]

    func blockdevCreate(_ arguments: inout CommandArguments) throws(QMPError) -> JSONValue {
        let jobID = try arguments.requiredString("job-id")
        guard let value = arguments.object["options"] else { throw CommandArguments.missing("options") }
        guard case .object(let object) = value else {
            throw QMPError("Invalid parameter type for 'options', expected: object")
        }
        try Self.finish(arguments.object, except: ["job-id", "options"])
        let options: BlockdevCreateOptions
        do throws(QMPError) {
            options = try Self.options(object)
        } catch {
            throw QMPError(error.errorClass, Self.qualified(error.desc))
        }
        try target.blockdevCreate(jobID: jobID, options: options)
        return .emptyObject
    }

    /// "Parameter 'size' is missing" -> "Parameter 'options.size' is missing".
    private static func qualified(_ text: String) -> String {
        guard text.hasPrefix("Parameter '") || text.hasPrefix("Invalid parameter type for '"),
              let quote = text.firstIndex(of: "'") else { return text }
        var text = text
        text.insert(contentsOf: "options.", at: text.index(after: quote))
        return text
    }

    private static func finish(_ object: JSONObject, except keys: Set<String>) throws(QMPError) {
        for entry in object.entries where !keys.contains(entry.key) {
            throw QMPError("Parameter '\(entry.key)' is unexpected")
        }
    }

    private static func options(_ object: JSONObject) throws(QMPError) -> BlockdevCreateOptions {
        var arguments = CommandArguments(object)
        let name = try arguments.requiredString("driver")
        guard let driver = Driver(rawValue: name) else {
            if otherCreatingDrivers.contains(name) {
                throw QMPError("Driver '\(name)' does not support blockdev-create in Spindle (it creates file and qcow2 images)")
            }
            throw QMPError("Parameter 'driver' does not accept value '\(name)'")
        }
        switch driver {
        case .file:
            let filename = try arguments.requiredString("filename")
            let bytes = try size("size", &arguments, required: true)!
            let preallocation = try arguments.optionalEnum("preallocation", BlockdevCreateOptions.Preallocation.self) ?? .off
            if try arguments.optionalBool("nocow") == true {
                throw QMPError("Parameter 'nocow' is not supported by Spindle")
            }
            _ = try size("extent-size-hint", &arguments, required: false)
            try arguments.finish()
            return .file(filename: filename, size: bytes, preallocation: preallocation)
        case .qcow2:
            let file = try fileReference(&arguments)
            var qcow2 = BlockdevCreateQcow2(file: file, size: 0)
            if arguments.object["data-file"] != nil { throw QMPError("Parameter 'data-file' is not supported by Spindle (external data files)") }
            if arguments.object["data-file-raw"] != nil { throw QMPError("Parameter 'data-file-raw' is not supported by Spindle (external data files)") }
            qcow2.size = try size("size", &arguments, required: true)!
            qcow2.version = try arguments.optionalEnum("version", Version.self).map { $0 == .v2 ? 2 : 3 }
            qcow2.backingFile = try arguments.optionalString("backing-file")
            qcow2.backingFormat = try arguments.optionalString("backing-fmt")
            if arguments.object["encrypt"] != nil { throw QMPError("Parameter 'encrypt' is not supported by Spindle (encrypted qcow2 images)") }
            qcow2.clusterSize = try size("cluster-size", &arguments, required: false)
            qcow2.preallocation = try arguments.optionalEnum("preallocation", BlockdevCreateOptions.Preallocation.self) ?? .off
            qcow2.lazyRefcounts = try arguments.optionalBool("lazy-refcounts")
            if let bits = try arguments.optionalInt64("refcount-bits") {
                qcow2.refcountBits = bits < 0 ? 0 : UInt64(bits)  // 0: refused by the job with QEMU's text
            }
            if try arguments.optionalEnum("compression-type", CompressionType.self) == .zstd {
                throw QMPError("compression-type 'zstd' is not supported by Spindle; use zlib")
            }
            if try arguments.optionalBool("extended-l2") == true {
                throw QMPError("Parameter 'extended-l2' is not supported by Spindle (subclusters)")
            }
            try arguments.finish()
            return .qcow2(qcow2)
        }
    }

    /// A QAPI `size`: a JSON integer from 0 to 2^63 - 1 here.
    private static func size(_ key: String, _ arguments: inout CommandArguments, required: Bool) throws(QMPError) -> UInt64? {
        guard let value = try arguments.optionalInt64(key) else {
            if required { throw CommandArguments.missing(key) }
            return nil
        }
        guard value >= 0 else { throw QMPError("Invalid parameter type for '\(key)', expected: integer") }
        return UInt64(value)
    }

    /// A BlockdevRef: a node name, or an inline `{"driver": "file", "filename": ...}`.
    private static func fileReference(_ arguments: inout CommandArguments) throws(QMPError) -> Qcow2Options.File {
        guard let value = arguments.object["file"] else { throw CommandArguments.missing("file") }
        _ = try? arguments.optionalString("file")  // marks it read; the type is checked here
        switch value {
        case .string(let name):
            return .node(NodeName(name))
        case .object(let object):
            var inner = CommandArguments(object)
            let driver = try inner.requiredString("driver")
            guard driver == "file" else {
                throw QMPError("file: only an inline driver=file is supported by Spindle here (got '\(driver)'); add the node with blockdev-add and give its node-name")
            }
            let filename = try inner.requiredString("filename")
            try inner.finish()
            return .inline(FileOptions(filename: filename))
        default:
            throw QMPError("Invalid parameter type for 'file', expected: BlockdevRef")
        }
    }
}
