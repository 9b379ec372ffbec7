import Foundation
import XCTest
import FuzzEntryPoints

/// Replays the committed seed corpus (Fuzz/corpus/<target>/) and every input that ever made a
/// fuzz target fail (Tests/Regressions/<target>/) through the same entry points libFuzzer
/// drives: none may crash or trip an invariant.
final class FuzzRegressionTests: XCTestCase {
    static let root = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static func inputs(under folder: String, for target: FuzzTarget) -> [URL] {
        let directory = root.appendingPathComponent(folder).appendingPathComponent(target.rawValue)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []
        return names.filter { !$0.hasPrefix(".") }.sorted().map { directory.appendingPathComponent($0) }
    }

    func testSeedCorpusRunsCleanly() throws {
        for target in FuzzTarget.allCases {
            let inputs = Self.inputs(under: "Fuzz/corpus", for: target)
            XCTAssertFalse(inputs.isEmpty, "no seed corpus for \(target.rawValue)")
            for input in inputs { target.run([UInt8](try Data(contentsOf: input))) }
        }
    }

    func testPastCrashesStayFixed() throws {
        for target in FuzzTarget.allCases {
            for input in Self.inputs(under: "Tests/Regressions", for: target) {
                target.run([UInt8](try Data(contentsOf: input)))
            }
        }
    }
}
