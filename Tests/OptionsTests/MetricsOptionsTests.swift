import SpindleOptions
import Testing

@Suite struct MetricsOptionsTests {
    @Test func inetAddressInKeyvalAndJSON() throws {
        let keyval = try configuration(["--metrics", "addr.type=inet,addr.host=127.0.0.1,addr.port=9109"])
        #expect(keyval.metrics == MetricsEndpointOptions(address: .inet(host: "127.0.0.1", port: 9109)))
        // QEMU's InetSocketAddress has the port as a string; a JSON number is accepted too.
        let json = try configuration(["--metrics", #"{"addr":{"type":"inet","host":"::1","port":"9109"}}"#])
        #expect(json.metrics == MetricsEndpointOptions(address: .inet(host: "::1", port: 9109)))
        let number = try configuration(["--metrics", #"{"addr":{"type":"inet","host":"localhost","port":9110}}"#])
        #expect(number.metrics?.address == .inet(host: "localhost", port: 9110))
    }

    @Test func unixAddress() throws {
        let config = try configuration(["--metrics=addr.type=unix,addr.path=/run/spindle-metrics.sock"])
        #expect(config.metrics?.address == .unix(path: "/run/spindle-metrics.sock"))
        #expect(try configuration(nullNode).metrics == nil)
    }

    @Test func addressesPrintAsOperatorsWriteThem() {
        #expect("\(MetricsAddress.inet(host: "127.0.0.1", port: 9109))" == "127.0.0.1:9109")
        #expect("\(MetricsAddress.inet(host: "::1", port: 9109))" == "[::1]:9109")
        #expect("\(MetricsAddress.unix(path: "/run/m.sock"))" == "/run/m.sock")
    }

    @Test func badAddressesAreOneLineErrors() {
        expectError(["--metrics", "addr.host=127.0.0.1,addr.port=9109"], "--metrics", "missing required key 'addr.type'")
        expectError(["--metrics", "addr.type=tcp,addr.host=h,addr.port=1"], "--metrics", "invalid value 'tcp'", "inet or unix")
        expectError(["--metrics", "addr.type=inet,addr.port=9109"], "missing required key 'addr.host'")
        expectError(["--metrics", "addr.type=inet,addr.host=,addr.port=9109"], "'addr.host' must not be empty")
        expectError(["--metrics", "addr.type=inet,addr.host=127.0.0.1"], "missing required key 'addr.port'")
        expectError(["--metrics", "addr.type=inet,addr.host=127.0.0.1,addr.port=0"], "invalid port '0'", "1 to 65535")
        expectError(["--metrics", "addr.type=inet,addr.host=127.0.0.1,addr.port=65536"], "invalid port '65536'")
        expectError(["--metrics", "addr.type=inet,addr.host=127.0.0.1,addr.port=http"], "invalid port 'http'")
        expectError(["--metrics", #"{"addr":{"type":"inet","host":"h","port":true}}"#], "'addr.port' must be", "not a boolean")
        expectError(["--metrics", "addr.type=inet,addr.host=h,addr.port=1,addr.path=/x"], "unknown key 'addr.path'")
        expectError(["--metrics", "addr.type=unix"], "missing required key 'addr.path'")
        expectError(["--metrics", "addr.type=unix,addr.path=/x,addr.port=1"], "unknown key 'addr.port'")
        expectError(["--metrics", "addr.type=unix,addr.path=/" + String(repeating: "a", count: 120)], "too long")
    }

    @Test func oneEndpointAndItsOwnSocketPath() {
        let metrics = ["--metrics", "addr.type=inet,addr.host=127.0.0.1,addr.port=9109"]
        expectError(metrics + metrics, "--metrics", "given twice")
        expectError(nullNode + exportArgs(path: "/tmp/s.sock") + ["--metrics", "addr.type=unix,addr.path=/tmp/s.sock"],
                    "--metrics", "already used by export 'exp0'")
        expectError(["--metrics", "addr.type=unix,addr.path=/tmp/s.sock"] + nullNode + exportArgs(path: "/tmp/s.sock"),
                    "--export id=exp0", "already used by --metrics")
        expectError(["--metrics", "addr.type=unix,addr.path=/tmp/q.sock", "--qmp", "/tmp/q.sock"], "--qmp", "already used by --metrics")
    }
}
