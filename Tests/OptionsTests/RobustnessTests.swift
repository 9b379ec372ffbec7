import SpindleOptions
import Testing

/// Nothing may crash, whatever the input: every input either parses or throws.
@Suite struct RobustnessTests {
    static let fragments = [
        "--blockdev", "--export", "--object", "--chardev", "--monitor", "--qmp", "--pidfile", "--daemonize",
        "null-co,node-name=n0", "file,node-name=d,filename=x", ",", ",,", "=", "==", ".", "..", "{", "}", "[", "]",
        "\"", "\\", "\\u", ":", "node-name", "addr.path=/s", "id=e", "vhost-user-blk", "iothread", "size=",
        "0x", "-1", "99999999999999999999", "1e999", "true", "null", "é", "\u{0}", " ", "cache.direct=on", "a.b.c=",
    ]

    @Test func randomArgumentListsNeverCrash() {
        var generator = SplitMix64(seed: 42)
        for _ in 0..<3000 {
            let count = Int(generator.next() % 6)
            let args = (0..<count).map { _ in
                let pieces = Int(generator.next() % 5) + 1
                return (0..<pieces).map { _ in Self.fragments[Int(generator.next() % UInt64(Self.fragments.count))] }.joined()
            }
            _ = try? parseCommandLine(args)
        }
    }

    @Test func randomJSONNeverCrashes() {
        var generator = SplitMix64(seed: 7)
        let alphabet = Array("{}[]\":,\\u0123456789abcdef-+.eE truefalsnl\u{1}é")
        for _ in 0..<3000 {
            let length = Int(generator.next() % 40)
            let text = "{" + String((0..<length).map { _ in alphabet[Int(generator.next() % UInt64(alphabet.count))] })
            for option in ["--blockdev", "--export", "--object", "--monitor"] {
                _ = try? parseCommandLine([option, text])
            }
        }
    }
}

/// A tiny deterministic random generator, so failures reproduce.
struct SplitMix64 {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
