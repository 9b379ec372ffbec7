import BlockCommon
@testable import SpindleOptions
import Testing

/// Parses a command line that must be valid and must ask to run.
func configuration(_ args: [String], sourceLocation: SourceLocation = #_sourceLocation) throws -> DaemonConfiguration {
    let action = try parseCommandLine(args)
    guard case .run(let configuration) = action else {
        Issue.record("expected .run, got \(action)", sourceLocation: sourceLocation)
        return DaemonConfiguration()
    }
    return configuration
}

/// The one-line error a command line produces, or nil (recorded as a failure) if it parses.
func errorLine(_ args: [String], sourceLocation: SourceLocation = #_sourceLocation) -> String? {
    do {
        let action = try parseCommandLine(args)
        Issue.record("expected an error, got \(action)", sourceLocation: sourceLocation)
        return nil
    } catch {
        #expect(!error.description.contains("\n"), "error must be one line", sourceLocation: sourceLocation)
        return error.description
    }
}

/// Checks that `args` fail with a message containing every fragment.
func expectError(_ args: [String], _ fragments: String..., sourceLocation: SourceLocation = #_sourceLocation) {
    guard let line = errorLine(args, sourceLocation: sourceLocation) else { return }
    for fragment in fragments {
        #expect(line.contains(fragment), "'\(line)' should contain '\(fragment)'", sourceLocation: sourceLocation)
    }
}

let nullNode = ["--blockdev", "null-co,node-name=n0"]

func exportArgs(_ extra: String = "", id: String = "exp0", node: String = "n0", path: String = "/tmp/exp0.sock") -> [String] {
    ["--export", "type=vhost-user-blk,id=\(id),node-name=\(node),addr.type=unix,addr.path=\(path)" + extra]
}
