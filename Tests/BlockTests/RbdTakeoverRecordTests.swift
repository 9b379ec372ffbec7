@testable import BlockGraph
import Glibc
import Testing

/// The record that lets a restarted Spindle break its dead predecessor's rbd lock: what it
/// accepts from the image's metadata, and when it calls a recorded process gone (only when
/// /proc proves it, on this boot and in this pid namespace). No cluster needed.
@Suite struct RbdTakeoverRecordTests {
    static let address = "127.0.0.1:0/2558498988"

    func thisProcess() throws -> RbdTakeoverRecord {
        try #require(RbdTakeoverRecord.thisProcess(address: Self.address))
    }

    @Test func aRecordReadsBackAsWritten() throws {
        let record = try thisProcess()
        #expect(RbdTakeoverRecord(decoding: record.encoded) == record)
        #expect(record.pid == getpid())
    }

    @Test func malformedOrForeignValuesAreRefused() throws {
        let good = try thisProcess().encoded
        let bad = [
            "", "spindle-lock-holder/2" + good.dropFirst("spindle-lock-holder/1".count),
            good.replacing(" pid=", with: " pid=-"),
            good.replacing(" pid=", with: " pid=x"),
            good.replacing(" start=", with: " start=-1"),
            good.replacing(" boot=", with: " boot=zz"),
            good.replacing(" pidns=pid:[", with: " pidns=net:["),
            good + " extra=1", good.replacing(" host=", with: " address="),
            good + String(repeating: "x", count: 600),
        ]
        for text in bad { #expect(RbdTakeoverRecord(decoding: text) == nil, "\(text)") }
    }

    @Test func thisLiveProcessIsNeverGone() throws {
        #expect(try !thisProcess().isProvablyGone)
    }

    @Test func aPidNoProcessHasIsGone() throws {
        var record = try thisProcess()
        record.pid = 4_194_304  // above the largest pid_max: never a process
        #expect(record.isProvablyGone)
    }

    @Test func aReusedPidIsGone() throws {
        var record = try thisProcess()
        record.startTime += 1  // our pid, but a process that started at another time
        #expect(record.isProvablyGone)
    }

    @Test func anotherBootOrPidNamespaceIsNeverProvablyGone() throws {
        var otherBoot = try thisProcess()
        otherBoot.pid = 4_194_304
        otherBoot.bootID = "00000000-0000-0000-0000-000000000000"
        #expect(!otherBoot.isProvablyGone)
        var otherNamespace = try thisProcess()
        otherNamespace.pid = 4_194_304
        otherNamespace.pidNamespace = "pid:[1]"
        #expect(!otherNamespace.isProvablyGone)
    }
}
