/// How completions are waited for.
enum CompletionMode: String, Sendable {
    /// Block in read() on the call eventfd (what a guest's interrupt handler amounts to).
    case eventfd
    /// Spin on used.idx with calls suppressed (what a polling driver does).
    case poll
}

/// spindle-bench's command line.
struct BenchOptions: Sendable {
    var socket = ""
    var queues = 1
    /// CPUs to pin queue threads to, in order (wrapping); nil: queue i on CPU i mod ncpus.
    var cpus: [Int]?
    var pin = true
    var iodepth = 32
    var blockSize = 4096
    var pattern = AccessPattern.randread
    var readPercent = 50
    var runtimeSeconds = 5.0
    var rampSeconds = 1.0
    var completion = CompletionMode.eventfd
    var eventIndex = true
    var indirect = false
    /// Packed rings (VIRTIO_F_RING_PACKED) instead of split ones.
    var packed = false
    var inflight = false
    var backendPID: Int32?
    var size: UInt64?
    var queueSize: Int?
    var jsonOnly = false
    /// Dirty logging on for the whole run, harvested every `harvestMilliseconds`.
    var dirtyLog = false
    var harvestMilliseconds = 100
    /// Data checks: every write's buffer holds this byte; every read must return this byte.
    var fill: UInt8?
    var expect: UInt8?
    /// --pair-socket: a second device driven from the same thread in alternating slices
    /// (PairedQueueWorker); nil for an ordinary run.
    var pairSocket: String?
    /// The second device's ring layout; nil: the same as the first's.
    var pairPacked: Bool?
    var sliceMilliseconds = 50

    static let usage = """
    usage: spindle-bench --socket PATH [options]

    Drives a vhost-user-blk backend directly (the frontend role QEMU plays) and prints one
    JSON line of results on stdout and a short summary on stderr.

      --socket PATH            the backend's vhost-user-blk Unix socket (required)
      --queues N               virtqueues, one pinned thread each (default 1)
      --cpus LIST|none         CPUs for the queue threads, e.g. 0,1 or 2-3 (default: queue i on CPU i)
      --iodepth N              requests in flight per queue (default 32)
      --bs SIZE                block size, with k/M suffix (default 4k)
      --rw PATTERN             read|write|randread|randwrite|randrw (default randread), or
                               discard|write-zeroes (sequential, one block each; for data checks)
      --rwmixread PCT          reads in percent for randrw (default 50)
      --runtime S              measured seconds (default 5)
      --ramp S                 warm-up seconds, excluded from the results (default 1)
      --completion MODE        eventfd (block on the call eventfd) or poll (spin on used.idx) (default eventfd)
      --event-idx on|off       negotiate VIRTIO_F_RING_EVENT_IDX (default on)
      --indirect on|off        use indirect descriptor tables (default off)
      --packed[=on|off]        packed virtqueues (VIRTIO_F_RING_PACKED) instead of split ones (default off;
                               Spindle offers them on exports with packed-ring=on)
      --inflight on|off        share an inflight buffer (INFLIGHT_SHMFD) as QEMU does (default off)
      --backend-pid PID        sample this process's CPU time over the measured window
      --size SIZE              bytes of the device to address, from offset 0 (default: its capacity)
      --queue-size N           ring size, a power of two for split rings, any for packed ones
                               (default: smallest power of two >= 64 that holds iodepth)
      --dirty-log[=on|off]     dirty logging for migration on for the whole run (LOG_SHMFD, VHOST_F_LOG_ALL),
                               harvested by a side thread as QEMU's migration thread does (default off)
      --harvest-ms N           milliseconds between harvests with --dirty-log (default 100)
      --fill BYTE              writes carry this byte in every position (e.g. 0x5a; default: buffers as they are)
      --expect BYTE            every byte a read returns must be BYTE; a read that differs counts as an error
      --pair-socket PATH       paired run: a second device (B), driven by the same thread on the same CPU,
                               alternating with the first (A) in slices (A B B A A B ...), each slice filling
                               the ring to --iodepth and draining it at the end; reports B's IOPS and per pair
                               of slices the ratio B/A (median, quartiles). One queue each; no --dirty-log
      --pair-packed[=on|off]   B's ring layout: packed or split (default: the same as A's, --packed)
      --slice-ms N             milliseconds per slice of a paired run (default 50)
      --json-only              no summary on stderr
      --help                   this text
    """

    /// Parses the arguments (without the program name).
    static func parse(_ arguments: [String]) throws(BenchUsageError) -> BenchOptions {
        var options = BenchOptions()
        var socketGiven = false
        var sliceGiven = false
        var iterator = arguments.makeIterator()
        while let argument = iterator.next() {
            var name = argument
            var inlineValue: String?
            if let equals = argument.firstIndex(of: "="), argument.hasPrefix("--") {
                name = String(argument[..<equals])
                inlineValue = String(argument[argument.index(after: equals)...])
            }
            func value() throws(BenchUsageError) -> String {
                if let inlineValue { return inlineValue }
                guard let next = iterator.next() else { throw BenchUsageError("\(name) needs a value") }
                return next
            }
            switch name {
            case "--help", "-h": throw BenchUsageError.help
            case "--socket": options.socket = try value(); socketGiven = true
            case "--queues": options.queues = try integer(name, try value(), 1...256)
            case "--cpus":
                let text = try value()
                if text == "none" { options.pin = false } else { options.cpus = try cpuList(text) }
            case "--iodepth": options.iodepth = try integer(name, try value(), 1...4096)
            case "--bs":
                let bytes = try byteSize(name, try value())
                guard bytes >= 512, bytes <= 64 << 20, bytes % 512 == 0 else {
                    throw BenchUsageError("--bs must be a multiple of 512 between 512 and 64M")
                }
                options.blockSize = Int(bytes)
            case "--rw":
                let text = try value()
                guard let pattern = AccessPattern(rawValue: text) else {
                    throw BenchUsageError("--rw must be one of \(AccessPattern.allCases.map(\.rawValue).joined(separator: "|")), not '\(text)'")
                }
                options.pattern = pattern
            case "--rwmixread": options.readPercent = try integer(name, try value(), 0...100)
            case "--runtime": options.runtimeSeconds = try seconds(name, try value(), allowZero: false)
            case "--ramp": options.rampSeconds = try seconds(name, try value(), allowZero: true)
            case "--completion":
                let text = try value()
                guard let mode = CompletionMode(rawValue: text) else { throw BenchUsageError("--completion must be eventfd or poll, not '\(text)'") }
                options.completion = mode
            case "--event-idx": options.eventIndex = try onOff(name, try value())
            case "--indirect": options.indirect = try onOff(name, try value())
            case "--inflight": options.inflight = try onOff(name, try value())
            case "--backend-pid": options.backendPID = Int32(try integer(name, try value(), 1...Int(Int32.max)))
            case "--size":
                let bytes = try byteSize(name, try value())
                guard bytes >= 512 else { throw BenchUsageError("--size must be at least 512 bytes") }
                options.size = bytes
            case "--queue-size":
                let size = try integer(name, try value(), 1...32768)
                // Split rings need a power of two; the frontend's own check says so.
                options.queueSize = size
            case "--json-only": options.jsonOnly = true
            case "--packed": options.packed = try inlineValue.map { value throws(BenchUsageError) in try onOff(name, value) } ?? true
            case "--dirty-log": options.dirtyLog = try inlineValue.map { value throws(BenchUsageError) in try onOff(name, value) } ?? true
            case "--harvest-ms": options.harvestMilliseconds = try integer(name, try value(), 1...60_000)
            case "--fill": options.fill = try byte(name, try value())
            case "--expect": options.expect = try byte(name, try value())
            case "--pair-socket": options.pairSocket = try value()
            case "--pair-packed": options.pairPacked = try inlineValue.map { value throws(BenchUsageError) in try onOff(name, value) } ?? true
            case "--slice-ms": options.sliceMilliseconds = try integer(name, try value(), 1...60_000); sliceGiven = true
            default: throw BenchUsageError("unknown option '\(argument)' (see --help)")
            }
        }
        guard socketGiven, !options.socket.isEmpty else { throw BenchUsageError("--socket PATH is required (see --help)") }
        try checkPairing(options, sliceGiven: sliceGiven)
        return options
    }

    private static func byte(_ name: String, _ text: String) throws(BenchUsageError) -> UInt8 {
        let value = text.hasPrefix("0x") ? UInt8(text.dropFirst(2), radix: 16) : UInt8(text)
        guard let value else { throw BenchUsageError("\(name) must be a byte value such as 0x5a or 90, not '\(text)'") }
        return value
    }

    private static func integer(_ name: String, _ text: String, _ range: ClosedRange<Int>) throws(BenchUsageError) -> Int {
        guard let value = Int(text), range.contains(value) else {
            throw BenchUsageError("\(name) must be an integer from \(range.lowerBound) to \(range.upperBound), not '\(text)'")
        }
        return value
    }

    private static func seconds(_ name: String, _ text: String, allowZero: Bool) throws(BenchUsageError) -> Double {
        var digits = Substring(text)
        if digits.hasSuffix("s") { digits = digits.dropLast() }
        guard let value = Double(digits), value.isFinite, value >= 0, allowZero || value > 0, value <= 86400 else {
            throw BenchUsageError("\(name) must be a number of seconds\(allowZero ? "" : " above 0"), not '\(text)'")
        }
        return value
    }

    private static func onOff(_ name: String, _ text: String) throws(BenchUsageError) -> Bool {
        switch text {
        case "on", "true", "1", "yes": return true
        case "off", "false", "0", "no": return false
        default: throw BenchUsageError("\(name) must be on or off, not '\(text)'")
        }
    }

    /// "4096", "4k", "4K", "1M", "1G" (binary multiples).
    static func byteSize(_ name: String, _ text: String) throws(BenchUsageError) -> UInt64 {
        var digits = Substring(text)
        var shift: UInt64 = 0
        if let last = digits.last, last.isLetter {
            switch last.lowercased() {
            case "k": shift = 10
            case "m": shift = 20
            case "g": shift = 30
            case "t": shift = 40
            default: throw BenchUsageError("\(name): unknown size suffix in '\(text)' (use k, M, G or T)")
            }
            digits = digits.dropLast()
        }
        guard let value = UInt64(digits), value <= UInt64.max >> shift else {
            throw BenchUsageError("\(name) must be a size like 4096, 4k or 1M, not '\(text)'")
        }
        return value << shift
    }

    /// "0,2,4-5".
    private static func cpuList(_ text: String) throws(BenchUsageError) -> [Int] {
        var cpus: [Int] = []
        for part in text.split(separator: ",") {
            let bounds = part.split(separator: "-", maxSplits: 1)
            guard let low = Int(bounds[0]), low >= 0,
                  let high = bounds.count == 2 ? Int(bounds[1]) : low, high >= low, high < 4096 else {
                throw BenchUsageError("--cpus must be a list like 0,1 or 2-3 (or none), not '\(text)'")
            }
            cpus.append(contentsOf: low...high)
        }
        guard !cpus.isEmpty else { throw BenchUsageError("--cpus list is empty") }
        return cpus
    }
}

/// A command-line problem: one line, or the help text.
struct BenchUsageError: Error, CustomStringConvertible {
    var description: String
    var isHelp = false

    init(_ description: String) {
        self.description = description
    }

    static var help: BenchUsageError {
        var error = BenchUsageError(BenchOptions.usage)
        error.isHelp = true
        return error
    }
}
