import BlockCommon
import SpindleOptions
import Testing

/// The export key `packed-ring` (offer VIRTIO_F_RING_PACKED), default on.
@Suite struct PackedRingOptionsTests {
    @Test func packedRingDefaultsOn() throws {
        #expect(try configuration(nullNode + exportArgs()).exports.first?.packedRing == true)
        #expect(try configuration(nullNode + exportArgs(",packed-ring=off")).exports.first?.packedRing == false)
        #expect(try configuration(nullNode + exportArgs(",packed-ring=on")).exports.first?.packedRing == true)
        let addr = OptionValue.object(OptionObject(["type": .string("unix"), "path": .string("/tmp/e0.sock")]))
        #expect(try exportOptions(fromJSONObject: OptionObject([
            "type": .string("vhost-user-blk"), "id": .string("e0"), "node-name": .string("n0"), "addr": addr,
        ])).packedRing)
        #expect(try !exportOptions(fromJSONObject: OptionObject([
            "type": .string("vhost-user-blk"), "id": .string("e0"), "node-name": .string("n0"), "addr": addr,
            "packed-ring": .bool(false),
        ])).packedRing)
        expectError(nullNode + exportArgs(",packed-ring=yes please"), "invalid boolean 'yes please' for 'packed-ring'")
        #expect(spindleHelpText.contains("packed-ring=on|off"))
    }
}
