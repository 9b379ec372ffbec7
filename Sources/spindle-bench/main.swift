// spindle-bench: a vhost-user-blk benchmark client (see BenchOptions.usage).
#if canImport(Glibc)
import Glibc
#endif

func printError(_ message: String) {
    var line = "spindle-bench: error: " + message + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}

// A backend that disappears mid-run must produce an error, not kill us with SIGPIPE.
signal(SIGPIPE, SIG_IGN)

// The dump mode (tests' reference reads): the whole disk into a file.
if CommandLine.arguments.contains("--dump") {
    do {
        try DiskDump.run(Array(CommandLine.arguments.dropFirst()))
        exit(0)
    } catch {
        printError(error.description)
        exit(1)
    }
}

// The script mode (tests' writes): given requests one at a time, each acknowledged on stdout.
if CommandLine.arguments.contains("--script") {
    do {
        try DiskScript.run(Array(CommandLine.arguments.dropFirst()))
        exit(0)
    } catch {
        printError(error.description)
        exit(1)
    }
}

let options: BenchOptions
do {
    options = try BenchOptions.parse(Array(CommandLine.arguments.dropFirst()))
} catch {
    if error.isHelp {
        print(error.description)
        exit(0)
    }
    printError(error.description)
    exit(2)
}

do {
    let report = try options.isPaired ? PairedRun.run(options) : BenchRun.run(options)
    print(report.json)
    if !options.jsonOnly {
        var summary = report.summary + "\n"
        summary.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }
    exit(report.hasFailedRequests ? 1 : 0)
} catch {
    printError(error.description)
    exit(1)
}
