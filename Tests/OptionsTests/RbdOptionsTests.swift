import BlockCommon
import SpindleOptions
import Testing

@Suite struct RbdOptionsTests {
    @Test func keyvalWithServerListAndSecret() throws {
        let config = try configuration([
            "--object", "secret,id=sec0,file=/etc/ceph/admin.key,format=base64",
            "--blockdev", "driver=rbd,node-name=r0,pool=rbd,image=test,namespace=ns,conf=/dev/null,user=admin,key-secret=sec0,"
                + "server.0.host=10.0.0.1,server.0.port=6789,server.1.host=::1,server.1.port=3300,auth-client-required.0=cephx,discard=unmap",
        ])
        var rbd = RbdOptions(pool: "rbd", image: "test")
        rbd.namespace = "ns"
        rbd.conf = "/dev/null"
        rbd.user = "admin"
        rbd.keySecret = "sec0"
        rbd.servers = [RbdServer(host: "10.0.0.1", port: "6789"), RbdServer(host: "::1", port: "3300")]
        rbd.authClientRequired = ["cephx"]
        rbd.discardUnmap = true
        #expect(config.blockdevs == [BlockdevOptions(nodeName: NodeName("r0"), driver: .rbd(rbd))])
        var secret = SecretObjectOptions(id: "sec0", source: .file("/etc/ceph/admin.key"))
        secret.format = .base64
        #expect(config.secrets == [secret])
        #expect(config.iothreads.isEmpty)
    }

    @Test func jsonWithServerArray() throws {
        let config = try configuration(["--blockdev",
            #"{"driver":"rbd","node-name":"r0","pool":"p","image":"i","server":[{"host":"mon1","port":"6789"}],"auth-client-required":["cephx","none"]}"#])
        guard case .rbd(let rbd) = config.blockdevs.first?.driver else { Issue.record("not an rbd node"); return }
        #expect(rbd.servers == [RbdServer(host: "mon1", port: "6789")])
        #expect(rbd.authClientRequired == ["cephx", "none"])
        #expect(!rbd.readOnly && !rbd.discardUnmap)
    }

    @Test func snapshotIsReadOnly() throws {
        let config = try configuration(["--blockdev", "driver=rbd,node-name=r0,pool=rbd,image=test,snapshot=s1"])
        #expect(config.blockdevs.first?.readOnly == true)
        expectError(["--blockdev", "driver=rbd,node-name=r0,pool=rbd,image=test,snapshot=s1,read-only=off"], "read-only")
        // A writable export of it is refused at once.
        expectError(["--blockdev", "driver=rbd,node-name=r0,pool=rbd,image=test,snapshot=s1",
                     "--export", "vhost-user-blk,id=e0,node-name=r0,addr.type=unix,addr.path=/tmp/x.sock,writable=on"], "read-only")
    }

    @Test func badValuesNameTheKey() {
        expectError(["--blockdev", "driver=rbd,node-name=r0,image=test"], "missing required key 'pool'")
        expectError(["--blockdev", "driver=rbd,node-name=r0,pool=rbd"], "missing required key 'image'")
        expectError(["--blockdev", "driver=rbd,node-name=r0,pool=rbd,image=i,server.0.host=h"], "server.0.port")
        expectError(["--blockdev", "driver=rbd,node-name=r0,pool=rbd,image=i,server.0.host=h,server.0.port=99999"], "port number")
        expectError(["--blockdev", "driver=rbd,node-name=r0,pool=rbd,image=i,auth-client-required.0=kerberos"], "cephx or none")
        expectError(["--blockdev", "driver=rbd,node-name=r0,pool=rbd,image=i,filename=x"], "unknown key 'filename'")
    }

    @Test func secretSourcesAndIDs() throws {
        let config = try configuration(["--object", "secret,id=k,data=hunter2"])
        #expect(config.secrets == [SecretObjectOptions(id: "k", source: .data("hunter2"))])
        expectError(["--object", "secret,id=k"], "data=")
        expectError(["--object", "secret,id=k,data=a,file=/b"], "not both")
        expectError(["--object", "secret,id=k,data=a,format=hex"], "raw or base64")
        expectError(["--object", "secret,id=k,data=a", "--object", "iothread,id=k"], "already used")
        expectError(["--object", "iothread,id=k", "--object", "secret,id=k,data=a"], "already used")
    }

    @Test func secretNeverShowsInlineData() {
        let secret = SecretObjectOptions(id: "k", source: .data("hunter2"))
        #expect(!"\(secret)".contains("hunter2"))
        let line = errorLineText(["--object", "secret,id=k,data=hunter2,bogus=1"])
        #expect(!line.contains("hunter2"))
    }

    @Test func qmpObjectAddShape() throws {
        let secret = try secretObjectOptions(fromJSONObject: OptionObject(["qom-type": .string("secret"), "id": .string("s"),
                                                                           "data": .string("eA=="), "format": .string("base64")]))
        #expect(secret.format == .base64 && secret.source == .data("eA=="))
    }
}

private func errorLineText(_ args: [String]) -> String {
    do {
        _ = try parseCommandLine(args)
        return ""
    } catch {
        return "\(error)"
    }
}
