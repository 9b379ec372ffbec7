import ControlThread
import Glibc
@testable import Monitor
import SpindleOptions
import SpindleTestSupport
import Testing

@Suite(.serialized) struct ClientsAndEventsTests {
    @Test func eventsGoToEveryNegotiatedClientWithATimestamp() async throws {
        let fixture = try await QMPFixture.make()
        defer { fixture.closeSoon() }
        let first = try QMPLineClient(path: fixture.path)
        try first.negotiate()
        let second = try QMPLineClient(path: fixture.path)
        try second.negotiate()
        let unnegotiated = try QMPLineClient(path: fixture.path)
        _ = try unnegotiated.readLine()

        var before = timespec()
        clock_gettime(CLOCK_REALTIME, &before)
        await fixture.emit("BLOCK_EXPORT_DELETED", data: .object(["id": .string("exp0")]))
        await fixture.emit("RESUME", data: nil)
        for client in [first, second] {
            let line = try client.readLine()
            #expect(line.hasPrefix(#"{"timestamp": {"seconds": "#))
            #expect(line.hasSuffix(#"}, "event": "BLOCK_EXPORT_DELETED", "data": {"id": "exp0"}}"#))
            guard case .object(let event) = try JSONText.parse(Array(line.utf8)),
                  case .object(let stamp)? = event["timestamp"],
                  case .number(let seconds)? = stamp["seconds"], let s = Int(seconds),
                  case .number(let micros)? = stamp["microseconds"], let us = Int(micros) else {
                Issue.record("bad event \(line)")
                continue
            }
            #expect(s >= before.tv_sec && s <= before.tv_sec + 5)
            #expect((0..<1_000_000).contains(us))
            #expect(try client.readLine().hasSuffix(#""event": "RESUME"}"#))
        }
        // The client that has not negotiated gets no events: its next line is its own reply.
        #expect(try unnegotiated.command(#"{"execute": "qmp_capabilities"}"#) == #"{"return": {}}"#)
    }

    @Test func oneClientsBadInputLeavesTheOthersAlone() async throws {
        let fixture = try await QMPFixture.make()
        defer { fixture.closeSoon() }
        let good = try QMPLineClient(path: fixture.path)
        try good.negotiate()
        let bad = try QMPLineClient(path: fixture.path)
        try bad.negotiate()
        bad.sendBytes([0x00, 0xFF, 0x7B, 0x22, 0x0A] + Array(String(repeating: "{", count: 100).utf8))
        #expect(try good.command(#"{"execute": "query-version", "id": "g"}"#).hasSuffix(#""id": "g"}"#))
        bad.send("\n")
        // The bad client's connection is still usable once its brackets are closed.
        bad.send(String(repeating: "}", count: 100) + "\n")
        var lines = 0
        while lines < 10, !(try bad.command(#"{"execute": "query-version", "id": "b"}"#).hasSuffix(#""id": "b"}"#)) { lines += 1 }
        #expect(lines < 10)
        #expect(await fixture.clientCount == 2)
    }

    @Test func disconnectedClientsAreForgotten() async throws {
        let fixture = try await QMPFixture.make()
        defer { fixture.closeSoon() }
        do {
            let client = try QMPLineClient(path: fixture.path)
            try client.negotiate()
            #expect(await fixture.clientCount == 1)
            client.send(#"{"execute": "query-version"}"#)  // no newline needed, and never answered
        }
        for _ in 0..<200 where await fixture.clientCount > 0 { try await Task.sleep(for: .milliseconds(5)) }
        #expect(await fixture.clientCount == 0)
        await fixture.emit("RESUME", data: nil)  // nobody to send to; must not fail
    }

    @Test func aClientThatStopsReadingIsDropped() async throws {
        let fixture = try await QMPFixture.make()
        defer { fixture.closeSoon() }
        let sleeper = try QMPLineClient(path: fixture.path)
        try sleeper.negotiate()
        let reader = try QMPLineClient(path: fixture.path)
        try reader.negotiate()
        let big = JSONValue.string(String(repeating: "x", count: 64 << 10))
        // 16 MiB of events: more than the 8 MiB a client may leave unread.
        for _ in 0..<256 {
            await fixture.emit("BIG", data: .object(["x": big]))
            _ = try reader.readLine()
        }
        #expect(await fixture.clientCount == 1)
        #expect(try reader.command(#"{"execute": "query-version", "id": 1}"#).hasSuffix(#""id": 1}"#))
    }

    @Test func floodingClientIsServedInOrder() async throws {
        let (fixture, client) = try await negotiatedClient()
        defer { fixture.closeSoon() }
        var requests = ""
        for index in 0..<2000 { requests += #"{"execute": "query-block-exports", "id": \#(index)}"# }
        client.send(requests)
        for index in 0..<2000 {
            #expect(try client.readLine().hasSuffix(#""id": \#(index)}"#))
        }
    }
}

extension QMPFixture {
    func emit(_ event: String, data: JSONValue?) { server.emit(event: event, data: data) }
    var clientCount: Int { server.clientCount }
}
