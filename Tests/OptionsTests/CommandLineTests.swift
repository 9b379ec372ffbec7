@testable import SpindleOptions
import Testing

@Suite struct CommandLineTests {
    @Test func emptyCommandLineRunsWithNothing() throws {
        #expect(try parseCommandLine([]) == .run(DaemonConfiguration()))
    }

    @Test func helpAndVersion() throws {
        #expect(try parseCommandLine(["--help"]) == .help)
        #expect(try parseCommandLine(["-h"]) == .help)
        #expect(try parseCommandLine(["--version"]) == .version)
        #expect(try parseCommandLine(["-V"]) == .version)
        #expect(try parseCommandLine(nullNode + ["--help", "--bogus"]) == .help, "acts as soon as it is reached")
        expectError(["--bogus", "--help"], "--bogus: unknown option")
        expectError(["--help=x"], "--help: takes no value")
    }

    @Test func bothValueSpellings() throws {
        let spaced = try configuration(["--blockdev", "null-co,node-name=n0", "--pidfile", "/run/s.pid"])
        let joined = try configuration(["--blockdev=null-co,node-name=n0", "--pidfile=/run/s.pid"])
        #expect(spaced == joined)
        #expect(joined.pidfile == "/run/s.pid")
        // Only the first '=' separates the option from its value.
        let config = try configuration(["--blockdev=file,node-name=d,filename=a=b"])
        #expect(config.blockdevs.count == 1)
    }

    @Test func unambiguousPrefixes() throws {
        #expect(try configuration(["--pid", "/p"]).pidfile == "/p")
        #expect(try configuration(["--block", "null-co,node-name=n0"]).blockdevs.count == 1)
        #expect(try configuration(["--d"]).daemonize)
        #expect(try configuration(["--"]) == DaemonConfiguration())
    }

    @Test func pidfileAndDaemonize() throws {
        let config = try configuration(["--pidfile", "/a", "--daemonize", "--pidfile=/b", "--daemonize"])
        #expect(config.pidfile == "/b")
        #expect(config.daemonize)
        expectError(["--pidfile", ""], "--pidfile: path must not be empty")
        expectError(["--daemonize=yes"], "--daemonize: takes no value")
    }

    @Test func missingValues() {
        expectError(["--blockdev"], "--blockdev: missing value")
        expectError(["--export"], "--export: missing value", "type=vhost-user-blk")
        expectError(["--pidfile", "--daemonize"], "--pidfile: missing value")
        expectError(["--object"], "--object: missing value")
    }

    @Test func unknownAndMisspelledOptions() {
        expectError(["--foo"], "--foo: unknown option (see spindle --help)")
        expectError(["-blockdev", "null-co,node-name=n0"], "-blockdev: unknown option", "use --blockdev")
        expectError(["-blockdev=null-co"], "use --blockdev")
        expectError(["-x"], "-x: unknown option")
        expectError(["disk.img"], "unexpected argument 'disk.img'")
        expectError(["--", "x"], "unexpected argument 'x'")
        expectError(["--trace", "x"], "--trace: not supported by Spindle")
        expectError(["-T"], "--trace: not supported")
        expectError(["--nbd-server", "addr.type=unix,addr.path=/x"], "--nbd-server: not supported", "vhost-user-blk")
    }

    @Test func fullQSDStyleCommandLine() throws {
        let config = try configuration([
            "--object", "iothread,id=iot0",
            "--blockdev", "driver=file,node-name=disk0,filename=disk.img,cache.direct=on,aio=native",
            "--blockdev", "driver=null-co,node-name=null0,size=1G",
            "--export", "type=vhost-user-blk,id=exp0,node-name=disk0,addr.type=unix,addr.path=/tmp/exp0.sock,writable=on,iothread=iot0",
            "--export", "type=vhost-user-blk,id=exp1,node-name=null0,addr.type=unix,addr.path=/tmp/exp1.sock",
            "--chardev", "socket,id=qmp0,path=/tmp/qmp.sock,server=on,wait=off",
            "--monitor", "chardev=qmp0",
            "--pidfile", "/tmp/spindle.pid",
        ])
        #expect(config.blockdevs.map(\.nodeName.rawValue) == ["disk0", "null0"])
        #expect(config.exports.map(\.id) == ["exp0", "exp1"])
        #expect(config.iothreads.map(\.id) == ["iot0"])
        #expect(config.monitors.map(\.chardev.id) == ["qmp0"])
        #expect(config.notes.count == 1)
    }

    @Test func helpTextDocumentsEveryOptionAndKey() {
        #expect(spindleHelpText.hasPrefix("Usage: spindle [options]\n"))
        for option in CommandLineOption.all {
            if case .unsupported = option.kind { continue }
            #expect(spindleHelpText.contains(option.longName), "help lacks \(option.longName)")
        }
        let keys = BlockdevParser.fileKeys + BlockdevParser.nullKeys + DelayFilterParser.keys + ExportParser.keys + Qcow2Parser.keys
            + ObjectParser.iothreadKeys + ChardevParser.keys.filter { $0 != "backend" } + MonitorParser.keys
        // "key.*" stands for a list (key.0, key.1, ...): the help must name the key itself.
        for key in keys.map({ $0.hasSuffix(".*") ? String($0.dropLast(2)) : $0 }) {
            #expect(spindleHelpText.contains(key), "help lacks key \(key)")
        }
    }
}
