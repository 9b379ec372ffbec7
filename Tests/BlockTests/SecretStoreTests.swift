import BlockCommon
@testable import BlockGraph
import ControlThread
import Testing

@Suite struct SecretStoreTests {
    @Test @ControlActor func base64SecretsAreDecodedAndDuplicatesRefused() throws {
        let store = SecretStore()
        var secret = SecretObjectOptions(id: "k64", source: .data("aGVsbG8=\n"))
        secret.format = .base64
        try store.add(secret)
        #expect(store.bytes("k64") == Array("hello".utf8))
        #expect(throws: BlockError.self) { try store.add(secret) }
        var bad = SecretObjectOptions(id: "bad", source: .data("not base64!"))
        bad.format = .base64
        #expect(throws: BlockError.self) { try store.add(bad) }
        #expect(store.remove("k64"))
        #expect(!store.contains("k64"))
    }

    @Test @ControlActor func missingFileNamesSecretAndPath() {
        let store = SecretStore()
        do {
            try store.add(SecretObjectOptions(id: "f", source: .file("/nonexistent/key")))
            Issue.record("a missing file must fail")
        } catch {
            #expect(error.message.contains("secret 'f'") && error.message.contains("/nonexistent/key"))
        }
    }

    @Test func base64RoundTrips() {
        for length in 0..<40 {
            let bytes = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
            #expect(Base64.decode(Array(Base64.encode(bytes).utf8)) == bytes)
        }
        #expect(Base64.encode(Array("hello".utf8)) == "aGVsbG8=")
        #expect(Base64.decode(Array("aGVs=G8=".utf8)) == nil)  // data after padding
    }
}
