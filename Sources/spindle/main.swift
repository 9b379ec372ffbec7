import ControlThread
import Dispatch
import Glibc
import Logging
import MetricsEndpoint
import SpindleDaemon
import SpindleOptions

// spindle: a vhost-user-blk storage daemon. The main thread parses the command line, starts
// the daemon on the control thread, then only waits for SIGINT/SIGTERM to shut it down.

// Block the shutdown signals before any thread exists, so that every thread inherits the
// mask and only sigwait below sees them.
var shutdownSignals = sigset_t()
sigemptyset(&shutdownSignals)
sigaddset(&shutdownSignals, SIGINT)
sigaddset(&shutdownSignals, SIGTERM)
sigaddset(&shutdownSignals, SIGHUP)
pthread_sigmask(SIG_BLOCK, &shutdownSignals, nil)
signal(SIGPIPE, SIG_IGN)

let logLevel = Logger.Level(rawValue: getenv("SPINDLE_LOG_LEVEL").map { String(cString: $0) } ?? "info") ?? .info
let stderrIsJournal = JournalLogHandler.standardErrorIsJournal()
LoggingSystem.bootstrap { label in
    // Under systemd, stderr goes to the journal: syslog priority prefixes, no timestamps.
    if stderrIsJournal { return JournalLogHandler(label: label, logLevel: logLevel) }
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = logLevel
    return handler
}

func fail(_ message: String, status: Int32 = 1) -> Never {
    let line = "spindle: \(message)\n"
    _ = line.withCString { write(2, $0, strlen($0)) }
    exit(status)
}

let action: CommandLineAction
do {
    action = try parseCommandLine(Array(CommandLine.arguments.dropFirst()))
} catch {
    fail("\(error)")
}

let configuration: DaemonConfiguration
switch action {
case .help:
    print(spindleHelpText)
    exit(0)
case .version:
    print("spindle \(spindleVersion)")
    exit(0)
case .run(let parsed):
    configuration = parsed
}

/// Runs `body` on the control thread and waits for it (main thread only).
func onControlThread<T: Sendable>(_ body: @escaping @Sendable @ControlActor () async -> T) -> T {
    runOnControlThread(body)
}

// QMP `quit` asks this thread, waiting in sigwait below, to run the orderly shutdown.
let daemon = onControlThread { Daemon(requestQuit: { kill(getpid(), SIGTERM) }) }
let startError: (message: String, status: Int32)? = onControlThread {
    do {
        try await daemon.start(configuration)
        return nil
    } catch {
        await daemon.shutdown()
        return ("\(error)", (error as? DaemonError)?.exitStatus ?? 1)
    }
}
if let startError { fail(startError.message, status: startError.status) }

// --metrics: the Prometheus endpoint's own thread samples the daemon at each scrape.
var metricsServer: MetricsServer? = nil
if let metrics = configuration.metrics {
    do {
        metricsServer = try MetricsServer.start(metrics) { MetricsPage.scrape(daemon) }
    } catch {
        onControlThread { await daemon.shutdown() }
        fail("\(error)")
    }
}

if let pidfile = configuration.pidfile {
    let text = "\(getpid())\n"
    guard let file = fopen(pidfile, "w"), fputs(text, file) >= 0, fclose(file) == 0 else {
        metricsServer?.stop()
        onControlThread { await daemon.shutdown() }
        fail("--pidfile: cannot write '\(pidfile)': \(String(cString: strerror(errno)))")
    }
}

// systemd (Type=notify): every export listens, the monitors accept, the pidfile is written.
onControlThread { daemon.notifyReady() }

var received: Int32 = 0
sigwait(&shutdownSignals, &received)
Logger(label: "spindle").info("received signal \(received), shutting down")
onControlThread { daemon.notifyStopping() }
metricsServer?.stop()  // first: a scrape in progress waits for the control thread
onControlThread { await daemon.shutdown() }
if let pidfile = configuration.pidfile { unlink(pidfile) }
exit(0)
