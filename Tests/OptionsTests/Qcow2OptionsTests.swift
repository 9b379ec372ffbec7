import BlockCommon
@testable import SpindleOptions
import Testing

/// `driver=qcow2` from keyval, JSON (with the nested file object) and QMP's entry point.
@Suite struct Qcow2OptionsTests {
    let fileNode = ["--blockdev", "file,node-name=f0,filename=/tmp/vm.qcow2"]

    @Test func qcow2OverAFileNode() throws {
        let config = try configuration(fileNode + ["--blockdev", "qcow2,node-name=d0,file=f0,read-only=on,l2-cache-size=1M"])
        var expected = Qcow2Options(file: .node(NodeName("f0")))
        expected.readOnly = true
        expected.l2CacheSize = 1 << 20
        #expect(config.blockdevs.last == BlockdevOptions(nodeName: NodeName("d0"), driver: .qcow2(expected)))
        #expect(config.blockdevs.last?.driver.childNodeNames == [NodeName("f0")])
        #expect(config.blockdevs.last?.readOnly == true)
    }

    @Test func inlineFileFromJSONAndKeyval() throws {
        let json = #"{"driver":"qcow2","node-name":"d0","read-only":true,"file":{"driver":"file","filename":"/tmp/vm.qcow2"}}"#
        let config = try configuration(["--blockdev", json])
        var file = FileOptions(filename: "/tmp/vm.qcow2")
        file.readOnly = true
        var expected = Qcow2Options(file: .inline(file))
        expected.readOnly = true
        #expect(config.blockdevs.last?.driver == .qcow2(expected))
        let keyval = try configuration(["--blockdev", "driver=qcow2,node-name=d0,read-only=on,file.driver=file,file.filename=/tmp/vm.qcow2"])
        #expect(keyval.blockdevs.last?.driver == .qcow2(expected))
        let qmp = try blockdevOptions(fromJSONObject: OptionObject([
            "driver": .string("qcow2"), "node-name": .string("d0"), "read-only": .bool(true),
            "file": .object(OptionObject(["driver": .string("file"), "filename": .string("/tmp/vm.qcow2")])),
        ]))
        #expect(qmp.driver == .qcow2(expected))
    }

    @Test func backingNodeNullOrFromTheHeader() throws {
        let base = ["--blockdev", "file,node-name=b0,filename=/tmp/base.raw"]
        let named = try configuration(fileNode + base + ["--blockdev", "qcow2,node-name=d0,file=f0,backing=b0,read-only=on"])
        guard case .qcow2(let options)? = named.blockdevs.last?.driver else { Issue.record("not qcow2"); return }
        #expect(options.backing == .node(NodeName("b0")))
        #expect(named.blockdevs.last?.driver.childNodeNames == [NodeName("f0"), NodeName("b0")])
        let none = try configuration(fileNode + ["--blockdev", "qcow2,node-name=d0,file=f0,backing=null,read-only=on"])
        guard case .qcow2(let noBacking)? = none.blockdevs.last?.driver else { Issue.record("not qcow2"); return }
        #expect(noBacking.backing == .none)
        let json = try configuration(fileNode + ["--blockdev", #"{"driver":"qcow2","node-name":"d0","file":"f0","backing":null,"auto-read-only":true}"#])
        guard case .qcow2(let jsonNone)? = json.blockdevs.last?.driver else { Issue.record("not qcow2"); return }
        #expect(jsonNone.backing == .none && jsonNone.readOnly)
        let header = try configuration(fileNode + ["--blockdev", "qcow2,node-name=d0,file=f0,read-only=on"])
        guard case .qcow2(let fromHeader)? = header.blockdevs.last?.driver else { Issue.record("not qcow2"); return }
        #expect(fromHeader.backing == .fromHeader)
    }

    @Test func qcow2Errors() {
        expectError(["--blockdev", "qcow2,node-name=d0,read-only=on"], "missing required key 'file'")
        expectError(["--blockdev", "qcow2,node-name=d0,file=f0,read-only=on"], "node 'f0' does not exist")
        expectError(fileNode + ["--blockdev", "qcow2,node-name=d0,file=f0,backing=nothere,read-only=on"], "node 'nothere' does not exist")
        expectError(fileNode + ["--blockdev", "qcow2,node-name=d0,file=f0,size=1G"], "unknown key 'size'", "driver qcow2 takes")
        expectError(["--blockdev", "qcow2,node-name=d0,file.driver=nbd,file.filename=x"], "\"driver\": \"file\"")
        expectError(["--blockdev", "qcow2,node-name=d0,file.driver=file"], "missing required key 'file.filename'")
        expectError(fileNode + ["--blockdev", "qcow2,node-name=d0,file=f0,l2-cache-size=4G"], "'l2-cache-size' must be at most")
        expectError(fileNode + ["--blockdev", "qcow2,node-name=d0,file=f0,backing=d0"], "its own backing node")
        expectError(fileNode + ["--blockdev", "qcow2,node-name=d0,file=f0,read-only=on"] + exportArgs(",writable=on", node: "d0"),
                    "node 'd0' is read-only")
    }
}
