import SpindleOptions
import Testing

@Suite struct MonitorTests {
    let chardev = ["--chardev", "socket,id=c0,path=/tmp/qmp.sock,server=on,wait=off"]

    @Test func chardevAndMonitor() throws {
        let config = try configuration(chardev + ["--monitor", "chardev=c0,pretty=on"])
        var socket = SocketChardevOptions(id: "c0", path: "/tmp/qmp.sock")
        socket.wait = false
        var monitor = MonitorOptions(chardev: socket)
        monitor.pretty = true
        #expect(config.chardevs == [socket])
        #expect(config.monitors == [monitor])
    }

    @Test func impliedChardevAndJSONMonitor() throws {
        let short = try configuration(chardev + ["--monitor", "c0,mode=control"])
        let json = try configuration(chardev + ["--monitor", #"{"chardev":"c0","id":"mon0"}"#])
        #expect(short.monitors.first?.chardev.id == "c0")
        #expect(json.monitors.first?.id == "mon0")
    }

    @Test func chardevWaitsByDefaultAndShortBooleansAreNoted() throws {
        let config = try configuration(["--chardev", "socket,id=c0,path=/tmp/q.sock,server,nowait"])
        #expect(config.chardevs.first?.wait == false)
        #expect(config.notes.count == 2)
        let waiting = try configuration(["--chardev", "socket,id=c0,path=/tmp/q.sock,server=on"])
        #expect(waiting.chardevs.first?.wait == true)
    }

    @Test func qmpShorthand() throws {
        let config = try configuration(["--qmp", "/tmp/qmp.sock"])
        #expect(config.monitors.count == 1)
        #expect(config.monitors.first?.chardev.path == "/tmp/qmp.sock")
        #expect(config.monitors.first?.chardev.wait == false)
        #expect(config.chardevs.count == 1)
    }

    @Test func errors() {
        expectError(["--monitor", "c9"], "--monitor: chardev 'c9' does not exist (define it with --chardev")
        expectError(chardev + ["--monitor", "c0,mode=readline"], "use mode=control")
        expectError(chardev + ["--monitor", "c0,pretty"], "expected '=' after 'pretty'")
        expectError(chardev + ["--monitor", "c0", "--monitor", "c0"], "already has a monitor")
        expectError(chardev + ["--monitor", "c0,foo=1"], "unknown key 'foo'")
        expectError(["--chardev", "stdio,id=c0"], "unsupported chardev backend 'stdio'")
        expectError(["--chardev", "socket,id=c0,path=/tmp/q.sock"], "--chardev id=c0:", "server=on")
        expectError(["--chardev", "socket,id=c0,host=localhost,port=4444,server=on"], "unknown key 'host'")
        expectError(["--chardev", "socket,path=/tmp/q.sock,server=on"], "missing required key 'id'")
        expectError(["--chardev", #"{"backend":"socket"}"#], "JSON is not accepted")
        expectError(chardev + chardev, "chardev id 'c0' is already used")
        expectError(chardev + ["--qmp", "/tmp/qmp.sock"], "--qmp: socket path '/tmp/qmp.sock' is already used by chardev 'c0'")
        expectError(["--qmp", "/tmp/s"] + nullNode + exportArgs(path: "/tmp/s"), "already used by --qmp")
        expectError(["--qmp", ""], "--qmp: socket path must not be empty")
    }
}
