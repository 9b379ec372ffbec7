import BlockCommon
import SpindleOptions
import Testing

@Suite struct BlockdevTests {
    @Test func fileKeyval() throws {
        let config = try configuration(["--blockdev",
            "driver=file,node-name=disk0,filename=disk.img,aio=io_uring,cache.direct=on,cache.no-flush=yes,read-only=true,locking=off,discard=unmap"])
        var file = FileOptions(filename: "disk.img")
        file.direct = true
        file.noFlush = true
        file.readOnly = true
        file.locking = false
        file.discardUnmap = true
        #expect(config.blockdevs == [BlockdevOptions(nodeName: NodeName("disk0"), driver: .file(file))])
        #expect(config.notes.isEmpty)
    }

    @Test func fileDefaultsFollowQEMU() throws {
        let config = try configuration(["--blockdev", "file,node-name=disk0,filename=disk.img"])
        guard case .file(let file) = config.blockdevs.first?.driver else { Issue.record("not a file node"); return }
        #expect(!file.direct && !file.noFlush && !file.readOnly)
        #expect(file.locking)
        #expect(!file.discardUnmap, "QEMU's default is discard=ignore")
    }

    @Test func fileJSON() throws {
        let config = try configuration(["--blockdev",
            #"{"driver":"file","node-name":"disk0","filename":"disk.img","cache":{"direct":true,"no-flush":false},"read-only":false,"locking":"auto","discard":"ignore"}"#])
        var file = FileOptions(filename: "disk.img")
        file.direct = true
        file.discardUnmap = false
        #expect(config.blockdevs == [BlockdevOptions(nodeName: NodeName("disk0"), driver: .file(file))])
    }

    @Test func filenameWithCommas() throws {
        let config = try configuration(["--blockdev", "file,node-name=d,filename=/images/a,,b.img"])
        guard case .file(let file) = config.blockdevs.first?.driver else { Issue.record("not a file node"); return }
        #expect(file.filename == "/images/a,b.img")
    }

    @Test func aioThreadsIsAcceptedWithANote() throws {
        let config = try configuration(["--blockdev", "file,node-name=d,filename=x,aio=threads"])
        #expect(config.notes == ["--blockdev node-name=d: aio=threads ignored; Spindle always uses io_uring"])
    }

    @Test func nullKeyvalAndJSON() throws {
        let keyval = try configuration(["--blockdev", "driver=null-co,node-name=n0,size=4G,read-zeroes=on,read-only=off"])
        var null = NullOptions()
        null.size = 4 << 30
        null.readZeroes = true
        #expect(keyval.blockdevs == [BlockdevOptions(nodeName: NodeName("n0"), driver: .null(null))])
        let json = try configuration(["--blockdev", #"{"driver":"null-co","node-name":"n0","size":4294967296,"read-zeroes":true}"#])
        #expect(json.blockdevs == keyval.blockdevs)
        let defaults = try configuration(nullNode)
        #expect(defaults.blockdevs.first?.driver == .null(NullOptions()))
    }

    @Test func sizes() throws {
        for (text, bytes) in [("512", UInt64(512)), ("1k", 1024), ("2M", 2 << 20), ("0x1000", 4096), ("1T", 1 << 40)] {
            let config = try configuration(["--blockdev", "null-co,node-name=n0,size=\(text)"])
            #expect(config.blockdevs.first?.driver == .null({ var n = NullOptions(); n.size = bytes; return n }()))
        }
    }

    @Test func unknownKeyListsWhatTheDriverTakes() {
        expectError(["--blockdev", "driver=file,node-name=disk0,filenme=disk.img"],
                    "--blockdev node-name=disk0: unknown key 'filenme' (driver file takes: filename, node-name",
                    "cache.direct")
        expectError(["--blockdev", "null-co,node-name=n0,filename=x"], "unknown key 'filename'", "driver null-co takes")
        expectError(["--blockdev", #"{"driver":"file","node-name":"d","filename":"x","cache":{"direkt":true}}"#],
                    "unknown key 'cache.direkt'")
    }

    @Test func missingKeys() {
        expectError(["--blockdev", "node-name=n0"], "--blockdev", "missing required key 'driver'", "driver=file")
        expectError(["--blockdev", "null-co"], "--blockdev: missing required key 'node-name'")
        expectError(["--blockdev", "file,node-name=d"], "missing required key 'filename'")
        expectError(["--blockdev", ""], "missing required key 'driver'")
    }

    @Test func badValues() {
        expectError(["--blockdev", "null-co,node-name=n0,size=12Q"],
                    "--blockdev node-name=n0: invalid size '12Q' for 'size' (use a number with an optional k/M/G/T suffix)")
        expectError(["--blockdev", "null-co,node-name=n0,size=-1"], "invalid size '-1'")
        expectError(["--blockdev", "null-co,node-name=n0,size=99999999999999999999"], "invalid size")
        expectError(["--blockdev", "null-co,node-name=n0,size=17E"], "invalid size '17E'")
        expectError(["--blockdev", "null-co,node-name=n0,size="], "invalid size ''")
        expectError(["--blockdev", "null-co,node-name=n0,read-zeroes=maybe"],
                    "invalid boolean 'maybe' for 'read-zeroes' (use on or off)")
        expectError(["--blockdev", "null-co,node-name=n0,read-only=ON"], "invalid boolean 'ON'")
        expectError(["--blockdev", "file,node-name=d,filename=x,aio=posix"],
                    "invalid value 'posix' for 'aio' (use io_uring, threads or native)")
        expectError(["--blockdev", "file,node-name=d,filename=x,locking=yes"], "invalid value 'yes' for 'locking'")
        expectError(["--blockdev", "file,node-name=d,filename=x,discard=on"], "invalid value 'on' for 'discard'")
        expectError(["--blockdev", "qcow2,node-name=d"], "unsupported driver 'qcow2'", "file, null-co or rbd")
        expectError(["--blockdev", "file,node-name=d,filename=x,cache=on"], "'cache' must be an object")
        expectError(["--blockdev", "file,node-name=d,filename=x,cache=on,cache.direct=on"], "'cache' is given both")
        expectError(["--blockdev", "null-co,node-name=n0,read-zeroes"], "expected '=' after 'read-zeroes'")
    }

    @Test func emptyStrings() {
        expectError(["--blockdev", "null-co,node-name="], "invalid node-name ''")
        expectError(["--blockdev", "file,node-name=d,filename="], "'filename' must not be empty")
        expectError(["--blockdev", "driver=,node-name=d"], "unsupported driver ''")
    }

    @Test func nodeNames() throws {
        expectError(["--blockdev", "null-co,node-name=0n"], "invalid node-name '0n'", "start with a letter")
        expectError(["--blockdev", "null-co,node-name=n,,x"], "invalid node-name 'n,x'")
        expectError(["--blockdev", "null-co,node-name=" + String(repeating: "a", count: 32)], "too long")
        _ = try configuration(["--blockdev", "null-co,node-name=" + String(repeating: "a", count: 31)])
        expectError(nullNode + nullNode, "--blockdev: node-name 'n0' is already used")
    }

    @Test func jsonWrongTypes() {
        let prefix = #"{"driver":"file","node-name":"d","filename":"x""#
        expectError(["--blockdev", prefix + #","cache":{"direct":"on"}}"#], "'cache.direct' must be a boolean", "not a string")
        expectError(["--blockdev", prefix + #","read-only":1}"#], "'read-only' must be a boolean", "not a number")
        expectError(["--blockdev", prefix + #","cache":true}"#], "'cache' must be an object")
        expectError(["--blockdev", prefix + #","locking":true}"#], "'locking' must be a string")
        expectError(["--blockdev", #"{"driver":"file","node-name":"d","filename":7}"#], "'filename' must be a string, not a number")
        expectError(["--blockdev", #"{"driver":"file","node-name":null,"filename":"x"}"#], "'node-name' must be a string, not null")
        expectError(["--blockdev", #"{"driver":["file"]}"#], "'driver' must be a string, not an array")
        expectError(["--blockdev", #"{"driver":"null-co","node-name":"n","size":"1G"}"#], "'size' must be a size in bytes, not a string")
        expectError(["--blockdev", #"{"driver":"null-co","node-name":"n","size":1.5}"#], "invalid size 1.5")
        expectError(["--blockdev", #"{"driver":"null-co","node-name":"n","size":-1}"#], "invalid size -1")
        expectError(["--blockdev", #"{"driver":"file","node-name":"d","filename":"a\u0000b"}"#], "NUL")
        expectError(["--blockdev", "[1]"], "unsupported driver '[1]'")
        expectError(["--blockdev", "{\"driver\":"], "--blockdev: invalid JSON at offset")
    }
}

@Suite struct BlockdevLibvirtKeysTests {
    @Test func libvirtStyleKeysAreAccepted() throws {
        let action = try parseCommandLine(["--blockdev",
            #"{"driver":"file","node-name":"d","filename":"/x.img","auto-read-only":true,"discard":"unmap","detect-zeroes":"off","read-only":true,"force-share":true}"#])
        guard case .run(let config) = action, case .file(let file) = config.blockdevs.first?.driver else {
            Issue.record("no file node")
            return
        }
        #expect(file.autoReadOnly && !file.locking && file.readOnly && file.discardUnmap)
    }

    @Test func forceShareNeedsReadOnlyAndDetectZeroesMustBeOff() {
        #expect(throws: CommandLineError.self) {
            _ = try parseCommandLine(["--blockdev", "driver=file,node-name=d,filename=/x.img,force-share=on"])
        }
        #expect(throws: CommandLineError.self) {
            _ = try parseCommandLine(["--blockdev", "driver=null-co,node-name=n,detect-zeroes=unmap"])
        }
    }
}
