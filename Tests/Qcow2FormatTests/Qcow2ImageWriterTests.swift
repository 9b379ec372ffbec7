import Foundation
import Testing
@testable import Qcow2Format

/// New images from Qcow2ImageWriter: read back by Spindle's own parser, and checked by the
/// real qemu-img (`check` clean, `info` showing what was asked for).
struct Qcow2ImageWriterTests {
    /// Writes the image as a caller does: empty file of `fileLength`, then the writes.
    func write(_ image: Qcow2NewImage, to path: String) throws {
        var data = Data(count: Int(image.fileLength))
        for write in image.writes {
            data.replaceSubrange(Int(write.offset)..<Int(write.offset) + write.bytes.count, with: write.bytes)
        }
        try data.write(to: URL(fileURLWithPath: path))
    }

    func run(_ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: output, as: UTF8.self))
    }

    func temporaryPath(_ name: String) -> String {
        NSTemporaryDirectory() + "/spindle-writer-\(getpid())-\(name).qcow2"
    }

    func checkWithQemuImg(_ options: Qcow2CreateOptions) throws -> [String: Any] {
        let path = temporaryPath("\(options.clusterSize)-\(options.refcountBits)-\(options.version)")
        defer { unlink(path) }
        try write(try Qcow2ImageWriter.layout(options), to: path)
        let check = try run(["qemu-img", "check", path])
        #expect(check.status == 0, "qemu-img check: \(check.output)")
        let info = try run(["qemu-img", "info", "-U", "--output=json", path])
        #expect(info.status == 0, "qemu-img info: \(info.output)")
        return try JSONSerialization.jsonObject(with: Data(info.output.utf8)) as? [String: Any] ?? [:]
    }

    @Test(arguments: [(512, 16), (4096, 1), (65536, 16), (65536, 64), (2 << 20, 2), (512, 64)] as [(UInt64, UInt64)])
    func qemuImgFindsEveryGeometryClean(clusterSize: UInt64, refcountBits: UInt64) throws {
        var options = Qcow2CreateOptions(size: 3 << 30)
        options.clusterSize = clusterSize
        options.refcountBits = refcountBits
        let info = try checkWithQemuImg(options)
        #expect(info["virtual-size"] as? Int == 3 << 30)
        #expect(info["cluster-size"] as? Int == Int(clusterSize))
        let specific = (info["format-specific"] as? [String: Any])?["data"] as? [String: Any]
        #expect(specific?["compat"] as? String == "1.1")
        #expect(specific?["refcount-bits"] as? Int == Int(refcountBits))
        #expect(specific?["lazy-refcounts"] as? Bool == false)
    }

    @Test func version2AndLazyRefcountsAndBackingAreWhatQemuImgShows() throws {
        // Real backing files (qemu-img opens them): a raw one by relative name, and a qcow2
        // one (made by the writer too) by absolute path.
        let rawName = "spindle-writer-\(getpid())-base.raw"
        let raw = NSTemporaryDirectory() + "/" + rawName
        let base = temporaryPath("base")
        defer { unlink(raw); unlink(base) }
        try Data(count: 1 << 20).write(to: URL(fileURLWithPath: raw))
        try write(try Qcow2ImageWriter.layout(Qcow2CreateOptions(size: 100 << 20)), to: base)

        var v2 = Qcow2CreateOptions(size: 1 << 20)
        v2.version = 2
        v2.backingFile = rawName
        let old = try checkWithQemuImg(v2)
        #expect(((old["format-specific"] as? [String: Any])?["data"] as? [String: Any])?["compat"] as? String == "0.10")
        #expect(old["backing-filename"] as? String == rawName)
        #expect(old["backing-filename-format"] == nil)

        var lazy = Qcow2CreateOptions(size: 100 << 20)
        lazy.lazyRefcounts = true
        lazy.backingFile = base
        lazy.backingFormat = "qcow2"
        let info = try checkWithQemuImg(lazy)
        #expect(((info["format-specific"] as? [String: Any])?["data"] as? [String: Any])?["lazy-refcounts"] as? Bool == true)
        #expect(info["backing-filename"] as? String == base)
        #expect(info["backing-filename-format"] as? String == "qcow2")
    }

    @Test func spindlesParserReadsWhatTheWriterWrote() throws {
        var options = Qcow2CreateOptions(size: 1 << 40)
        options.clusterSize = 4096
        options.refcountBits = 4
        options.backingFile = "b"
        options.backingFormat = "raw"
        let image = try Qcow2ImageWriter.layout(options)
        var bytes = [UInt8](repeating: 0, count: Int(image.fileLength))
        for write in image.writes { bytes.replaceSubrange(Int(write.offset)..<Int(write.offset) + write.bytes.count, with: write.bytes) }
        let header = try Qcow2Header.parse(bytes)
        #expect(header.size == 1 << 40 && header.clusterSize == 4096 && header.refcountBits == 4)
        #expect(header.backingFileName == "b" && header.backingFormat == "raw")
        let layout = try Qcow2Layout.validate(header, fileLength: image.fileLength)
        #expect(layout.l1Size == 1 << 19)  // 1 TiB / (512 entries * 4 KiB)
        // Every metadata cluster counted once, nothing else.
        let blockOffset = Int(image.writes[1].bytes.prefix(8).reduce(0) { $0 << 8 | UInt64($1) })
        let counts = bytes[blockOffset...].withUnsafeBytes { block in
            (0..<Int(image.clusterCount) + 2).map { Qcow2Entries.refcount(in: block, index: $0, order: 2) }
        }
        #expect(counts.prefix(Int(image.clusterCount)).allSatisfy { $0 == 1 })
        #expect(counts.suffix(2) == [0, 0])
    }

    @Test func refusesWhatQemuRefuses() {
        func refusal(_ change: (inout Qcow2CreateOptions) -> Void) -> String {
            var options = Qcow2CreateOptions(size: 1 << 20)
            change(&options)
            do throws(Qcow2FormatError) {
                _ = try Qcow2ImageWriter.layout(options)
                return ""
            } catch {
                return error.message
            }
        }
        #expect(refusal { $0.size = 1000 } == "Image size must be a multiple of 512 bytes")
        #expect(refusal { $0.clusterSize = 1000 } == "Cluster size must be a power of two between 512 and 2048k")
        #expect(refusal { $0.clusterSize = 4 << 20 } == "Cluster size must be a power of two between 512 and 2048k")
        #expect(refusal { $0.refcountBits = 3 } == "Refcount width must be a power of two and may not exceed 64 bits")
        #expect(refusal { $0.refcountBits = 128 } == "Refcount width must be a power of two and may not exceed 64 bits")
        #expect(refusal { $0.version = 2; $0.refcountBits = 8 }.hasPrefix("Different refcount widths than 16 bits require compatibility level 1.1"))
        #expect(refusal { $0.version = 2; $0.lazyRefcounts = true }.hasPrefix("Lazy refcounts only supported with compatibility level 1.1"))
        #expect(refusal { $0.backingFormat = "raw" } == "Backing format cannot be used without backing file")
        #expect(refusal { $0.clusterSize = 512; $0.size = 1 << 50 }.contains("too large for cluster size 512"))
        #expect(refusal { $0.clusterSize = 512; $0.backingFile = String(repeating: "x", count: 500) }.contains("do not fit in the header cluster"))
    }

    @Test func aZeroSizedImageHasNoL1Table() throws {
        let image = try Qcow2ImageWriter.layout(Qcow2CreateOptions(size: 0))
        #expect(image.header.l1Size == 0)
        #expect(image.clusterCount == 3)
    }
}
