import BlockCommon

/// What the command line asks the daemon to do.
public enum CommandLineAction: Sendable, Equatable {
    case run(DaemonConfiguration)
    case help
    case version
}

/// Everything a valid command line describes, in command-line order within each list.
public struct DaemonConfiguration: Sendable, Equatable {
    public var blockdevs: [BlockdevOptions] = []
    public var exports: [VhostUserBlkExportOptions] = []
    public var iothreads: [IOThreadObjectOptions] = []
    /// `--object throttle-group`, before the throttle nodes that use them.
    public var throttleGroups: [ThrottleGroupOptions] = []
    /// `--object secret,...` (keys for rbd nodes), created before any node opens.
    public var secrets: [SecretObjectOptions] = []
    /// Every `--chardev`, including the ones `--qmp` creates (their ids start with `#`).
    public var chardevs: [SocketChardevOptions] = []
    /// QMP monitors, each with its chardev already looked up.
    public var monitors: [MonitorOptions] = []
    public var pidfile: String? = nil
    /// `--state-file PATH`: QMP changes are recorded there and replayed at start-up.
    public var stateFile: String? = nil
    /// `--daemonize`: fork, and have the parent exit once startup is complete.
    public var daemonize: Bool = false
    /// Options that were accepted but mean something slightly different in Spindle
    /// (e.g. `aio=threads`); the daemon should log these at startup.
    public var notes: [String] = []
    /// `--metrics`: where to serve Prometheus metrics (nil: no endpoint).
    public var metrics: MetricsEndpointOptions? = nil

    public init() {}
}

/// `--object iothread,id=ID,...`
public struct IOThreadObjectOptions: Sendable, Equatable {
    public var id: String
    /// Spindle extension: pin the thread to this host CPU.
    public var cpu: Int? = nil
    public var pollMaxNs: UInt64? = nil
    public var pollGrow: UInt64? = nil
    public var pollShrink: UInt64? = nil
    /// `x-sleep=poll`: sleep in poll(2) on the ring instead of in io_uring_enter (profiling
    /// under valgrind only; see IOThread).
    public var sleepsInPoll = false

    public init(id: String) { self.id = id }
}

/// `--chardev socket,id=ID,path=PATH,server=on[,wait=off]`: a listening UNIX socket.
public struct SocketChardevOptions: Sendable, Equatable {
    public var id: String
    public var path: String
    /// `wait=on` (QEMU's default): block startup until a client connects.
    public var wait: Bool = true

    public init(id: String, path: String) {
        self.id = id
        self.path = path
    }
}

/// `--monitor [chardev=]ID[,mode=control][,pretty=on|off]` or `--qmp PATH`.
public struct MonitorOptions: Sendable, Equatable {
    public var id: String? = nil
    public var chardev: SocketChardevOptions
    /// `pretty=on`: indent QMP responses.
    public var pretty: Bool = false

    public init(chardev: SocketChardevOptions) { self.chardev = chardev }
}
